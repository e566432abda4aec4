"""Synthetic needle data for the selector's learning tests, its curve figure and its benchmark.

Each question has a random unit text embedding q and K random unit frame embeddings; one frame,
the needle, is q plus noise (so only a question-aware policy can find it). The needle reward is 1
when a subset holds the needle, else 0: chance hit rate at budget n is n / K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .policy import SelectorBatch, collate


@dataclass
class NeedleSet:
    """B synthetic questions.

    Attributes:
        batch: the padded policy input.
        needles: int64 [B], the needle's candidate position per question.
    """

    batch: SelectorBatch
    needles: np.ndarray


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def needle_set(num: int, k: int | tuple[int, int], dim: int, rng: np.random.Generator,
               noise: float = 0.5) -> NeedleSet:
    """Make `num` needle questions.

    Args:
        num: questions.
        k: candidates per question, or a (low, high) range of even K (ragged batches).
        dim: embedding size D.
        rng: numpy generator.
        noise: std of the noise added to q for the needle frame (per coordinate, before norm).
    """
    frames, times, questions, needles = [], [], [], []
    for _ in range(num):
        kb = k if isinstance(k, int) else int(rng.integers(k[0] // 2, k[1] // 2 + 1)) * 2
        q = _unit(rng.standard_normal(dim))
        f = _unit(rng.standard_normal((kb, dim)))
        pos = int(rng.integers(kb))
        f[pos] = _unit(q + noise * rng.standard_normal(dim) / np.sqrt(dim) * 2)
        frames.append(f.astype(np.float32))
        times.append(((np.arange(kb) + 0.5) / kb).astype(np.float32))
        questions.append(q.astype(np.float32))
        needles.append(pos)
    return NeedleSet(collate(frames, times, questions), np.asarray(needles, np.int64))


class NeedleReward:
    """Reward 1.0 when the subset holds the question's needle, else 0.0.

    Args:
        needles: int64 [B], needle position per question.
        num_samples: N subsets per question (rows are question-major).
    """

    __name__ = "needle"

    def __init__(self, needles: np.ndarray, num_samples: int):
        self.needles = np.asarray(needles, np.int64)
        self.num_samples = num_samples

    def __call__(self, positions: np.ndarray) -> list[float]:
        want = np.repeat(self.needles, self.num_samples)
        return (positions == want[:, None]).any(axis=1).astype(float).tolist()


def hit_rate(positions: np.ndarray, needles: np.ndarray) -> float:
    """Fraction of rows whose positions [B, n] hold that row's needle [B]."""
    return float((np.asarray(positions) == np.asarray(needles)[:, None]).any(axis=1).mean())
