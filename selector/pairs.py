"""A synthetic task where the selector's autoregressive conditioning matters: complementary pairs.

Each video has K candidates (K even, as caches require, random in [k_low, k_high]) and one
question with a random unit text embedding q. Some candidates are of kind A, some of kind B,
the rest distractors; the counts (each in [2, 4]) and the positions of every kind are random per
video, so no position or count can be memorised. The reward is 1 when the chosen subset holds
at least one A frame *and* at least one B frame, else 0: the answer needs both halves.

- A frames: unit(q + 0.5 · noise): close to the question (cosine about 0.9).
- B frames: unit(0.5 · q + w + 0.5 · noise), w a random unit direction of the video orthogonal
  to q: half-way to the question (cosine about 0.4) and alike among themselves.
- distractors: random unit vectors (cosine about 0 ± 1/sqrt(D)).

Since every video has at least n = 2 A frames, independent top-n by cosine to the question picks
A frames only and scores about 0; a scorer that rates each frame alone (any fixed score per
frame, sampled without replacement) cannot be sure of a mixed pair either, because A frames are
alike among themselves and so are B frames. A policy gets 1 only by choosing its next frame
according to the ones it has already chosen.

The data is written as ordinary caches (`write_pair_cache`) so the selector trainer
(`selector.trainer.train`) runs on it unchanged, with `PairReward` passed as its reward (the
trainer's reward interface, `(samples, subsets) -> list[float | None]`). Held-out caches are
written from another seed: none of their videos, questions, embeddings or kind positions are
in the training cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from videocfr.cache_format import QuestionRecord, ShardWriter, VideoRecord, finalize_cache

from .data import SelectorSample

A, B, DISTRACTOR = 1, 2, 0
MODEL = {"name": "synthetic-pairs", "pretrained": "random"}
FPS = 1.0


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def pair_video(rng: np.random.Generator, k: int, dim: int, noise: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One video's candidates.

    Returns:
        (frames float32 [K, D] unit rows, question float32 [D] unit, kinds int8 [K] of A, B,
        DISTRACTOR).
    """
    q = _unit(rng.standard_normal(dim))
    w = rng.standard_normal(dim)
    w = _unit(w - (w @ q) * q)
    num_a, num_b = (int(x) for x in rng.integers(2, 5, size=2))
    kinds = np.zeros(k, np.int8)
    where = rng.permutation(k)
    kinds[where[:num_a]] = A
    kinds[where[num_a:num_a + num_b]] = B
    frames = _unit(rng.standard_normal((k, dim)))
    z = lambda m: noise * rng.standard_normal((m, dim)) / math.sqrt(dim)  # noqa: E731
    frames[kinds == A] = _unit(q + z(num_a))
    frames[kinds == B] = _unit(0.5 * q + w + z(num_b))
    return frames.astype(np.float32), q.astype(np.float32), kinds


def write_pair_cache(path: str | Path, num_videos: int, seed: int, dim: int = 32,
                     k_range: tuple[int, int] = (12, 20)) -> dict[tuple[str, str], np.ndarray]:
    """Write a finished cache of `num_videos` pair videos (one question each).

    Args:
        path: the cache directory (must not hold a cache).
        num_videos: videos (= questions).
        seed: every video, embedding and kind position comes from it; another seed gives a
            disjoint held-out set (its video ids carry the seed too).
        dim: embedding size D.
        k_range: K of each video is an even number drawn in [low, high].

    Returns:
        {(video_id, question_id): kinds int8 [K]}, the ground truth `PairReward` reads.
    """
    rng = np.random.default_rng(seed)
    config = {"synthetic": {"task": "pairs", "seed": int(seed), "dim": int(dim),
                            "k_range": [int(k_range[0]), int(k_range[1])]}}
    kinds_of: dict[tuple[str, str], np.ndarray] = {}
    with ShardWriter(path, config, embed_dim=dim, model=MODEL) as writer:
        for i in range(num_videos):
            k = 2 * int(rng.integers((k_range[0] + 1) // 2, k_range[1] // 2 + 1))
            frames, q, kinds = pair_video(rng, k, dim)
            vid = f"pairs-s{seed}-{i:05d}"
            idx = np.arange(k, dtype=np.int64)
            video = VideoRecord(video_id=vid, path=f"videos/{vid}.mp4", content_hash=f"{i:064x}",
                                fps=FPS, duration=k / FPS, num_frames=k, frame_indices=idx,
                                timestamps=idx / FPS, scenes=np.array([[0, k]], np.int64),
                                frame_scene=np.zeros(k, np.int32),
                                scene_rep=np.eye(1, k, dtype=bool)[0],
                                embeddings=frames.astype(np.float16))
            cos = frames @ q
            span = float(cos.max() - cos.min()) or 1.0
            ones = np.ones(k, np.float32)
            question = QuestionRecord(
                video_id=vid, question_id="q0", question="Which two frames answer it?",
                options=["A. yes", "B. no"], answer="A", problem_type="multiple choice",
                text_embedding=q.astype(np.float16), uniform=ones, scene=ones,
                semantic=((cos - cos.min()) / span).astype(np.float32),
                semantic_raw=cos.astype(np.float32), prior=ones / k)
            writer.add(video, [question])
            kinds_of[(vid, "q0")] = kinds
    finalize_cache(path)
    return kinds_of


class PairReward:
    """1.0 when the subset holds an A frame and a B frame, else 0.0 (None for unknown keys).

    Args:
        kinds: {(video_id, question_id): kinds int8 [K]} from `write_pair_cache`.
    """

    __name__ = "pair"

    def __init__(self, kinds: dict[tuple[str, str], np.ndarray]):
        self.kinds = kinds

    def __call__(self, samples: Sequence[SelectorSample], subsets: Sequence[np.ndarray]
                 ) -> list[float | None]:
        out: list[float | None] = []
        for s, pos in zip(samples, subsets):
            kinds = self.kinds.get(s.key)
            out.append(None if kinds is None else float(pair_solved(kinds, pos)))
        return out


def pair_solved(kinds: np.ndarray, positions: np.ndarray) -> bool:
    """Whether the positions hold at least one A and at least one B."""
    chosen = kinds[np.asarray(positions, np.int64)]
    return bool((chosen == A).any() and (chosen == B).any())


def chance_rate(kinds: np.ndarray, n: int) -> float:
    """Exact probability that n distinct candidates drawn uniformly solve the pair.

    1 - P(no A) - P(no B) + P(neither), each a ratio of binomial coefficients.
    """
    k, a, b = len(kinds), int((kinds == A).sum()), int((kinds == B).sum())
    total = math.comb(k, n)
    return 1 - (math.comb(k - a, n) + math.comb(k - b, n) - math.comb(k - a - b, n)) / total


def topn_cosine(sample: SelectorSample, n: int) -> np.ndarray:
    """The zero-parameter baseline: the n candidates most similar to the question (sorted)."""
    from videocfr.evaluate.strategies import top_n  # noqa: PLC0415

    frames = sample.video.embeddings.astype(np.float32)
    q = sample.question.text_embedding.astype(np.float32)
    cos = (frames @ q) / (np.linalg.norm(frames, axis=1) * np.linalg.norm(q))
    return top_n(cos, n)


def pair_config(cache_dir: str | Path, output_dir: str | Path, *, steps: int, n: int = 2,
                seed: int = 0, learning_rate: float = 3e-3, batch_size: int = 16,
                num_samples: int = 8, d_model: int = 32):
    """The selector trainer's config for the pair task (the reward is passed to `train`).

    The policy is the learning test's small one (1 layer, d_model 32, 2 heads); no Var(m)
    filter (no margins); one budget n for the whole run; checkpoint at the end only. The
    reward section is the default one and unused: pass `PairReward` to `train` as its reward.
    """
    from .config import (  # noqa: PLC0415
        SelectorDataConfig,
        SelectorGRPOConfig,
        SelectorRunConfig,
        SelectorTrainConfig,
    )

    return SelectorTrainConfig(
        policy={"d_model": d_model, "num_layers": 1, "num_heads": 2},
        data=SelectorDataConfig(cache_dir=str(cache_dir), min_margin_var=None),
        grpo=SelectorGRPOConfig(num_samples=num_samples, batch_size=batch_size, budgets=[n],
                                milestones=[0], learning_rate=learning_rate, weight_decay=0.0,
                                entropy_coef=0.0),
        run=SelectorRunConfig(max_steps=steps, output_dir=str(output_dir), checkpoint_every=0,
                              keep_checkpoints=1, seed=seed, device="cpu", tensorboard=False,
                              threads=1))


def evaluate_pairs(cache_dir: str | Path, kinds: dict[tuple[str, str], np.ndarray], n: int,
                   checkpoint: str | Path | None = None, seed: int = 0) -> dict[str, float]:
    """Solve rates on a (held-out) pair cache.

    Returns:
        {"topn": top-n by cosine, "random": one seeded uniform draw per question, "chance": the
        exact chance rate, "questions": count} and, with a checkpoint, "learned" (its greedy
        picks, as `videocfr select` makes them) and "unconditioned" (the top n of the same
        policy's first-step scores: its picks with the conditioning on earlier picks taken
        away).
    """
    from .config import SelectorDataConfig  # noqa: PLC0415
    from .data import load_samples  # noqa: PLC0415

    samples, _ = load_samples(SelectorDataConfig(cache_dir=str(cache_dir), min_margin_var=None))
    truth = [kinds[s.key] for s in samples]
    rng = np.random.default_rng(seed)
    out = {"questions": float(len(samples)),
           "topn": float(np.mean([pair_solved(t, topn_cosine(s, n))
                                  for s, t in zip(samples, truth)])),
           "random": float(np.mean([pair_solved(t, rng.choice(len(t), n, replace=False))
                                    for t in truth])),
           "chance": float(np.mean([chance_rate(t, n) for t in truth]))}
    if checkpoint is not None:
        from .checkpoint import load_policy  # noqa: PLC0415
        from .select import RefocusStrategy  # noqa: PLC0415

        policy, state = load_policy(checkpoint)
        picks = RefocusStrategy(policy, source=state["path"], state=state).choose(samples, n)
        out["learned"] = float(np.mean([pair_solved(t, p) for t, p in zip(truth, picks)]))
        first = first_step_topn(policy, samples, n)
        out["unconditioned"] = float(np.mean([pair_solved(t, p) for t, p in zip(truth, first)]))
    return out


def first_step_topn(policy, samples: list[SelectorSample], n: int) -> list[np.ndarray]:
    """Per sample, the n candidates the policy scores highest at its first step (sorted).

    This is the policy used as an independent per-frame scorer: what its picks would be if the
    decoder did not see the frames it had already chosen.
    """
    import torch  # noqa: PLC0415

    from .data import make_batch  # noqa: PLC0415

    batch = make_batch(samples)
    with torch.no_grad():
        memory, pad, keys = policy.encode(batch)
        empty = torch.zeros(len(samples), 0, dtype=torch.long)
        scores = policy._scores(memory, pad, keys, policy._prefix(memory, empty))[:, 0]
    scores = scores.masked_fill(~batch.mask, -torch.inf).numpy()
    return [np.sort(np.argsort(-row, kind="stable")[:n]) for row in scores]
