"""Video-R1's temporal (T-GRPO) and length rewards (METHOD §5), as pure numpy functions.

Temporal: besides the G completions on the frames in order, the policy answers G/2 times on the
same decoded frames in a random order (the video grid and the timestamps unchanged; only which
picture sits at which position changes). Those completions are scored and never trained on. Per
prompt, if mean R_acc(ordered) >= μ · mean R_acc(shuffled), μ = 0.8, each ordered completion
with R_acc > 0.1 gets +0.3: the policy is paid for answers that need the order of events.

Length: +0.2 for a completion of 320-512 tokens (EOS included) with R_acc > 0.1.

Both read R_acc before the temporal bonus. Video-R1 and VideoCFR train one prompt per GPU, so
their "batch" means are a prompt's group; here each prompt's group is judged on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

TEMPORAL_MU = 0.8
TEMPORAL_BONUS = 0.3
ACC_THRESHOLD = 0.1  # R_acc above this earns the temporal bonus and the length reward
LENGTH_RANGE = (320, 512)
LENGTH_BONUS = 0.2


def shuffled_order(num_frames: int, seed: Sequence[int]) -> np.ndarray:
    """A random order of K frames, seeded, never the identity when K > 1.

    Args:
        num_frames: K.
        seed: integers that fix the order (e.g. (run seed, step, sample index)).

    Returns:
        int64 [K], a permutation of 0..K-1.
    """
    rng = np.random.default_rng([int(s) for s in seed])
    identity = np.arange(num_frames)
    order = rng.permutation(num_frames)
    while num_frames > 1 and np.array_equal(order, identity):  # the identity is no shuffle
        order = rng.permutation(num_frames)
    return order.astype(np.int64)


def shuffle_sample_frames(sample, seed: Sequence[int]):
    """A copy of a `train.data.Sample` whose frames are in `shuffled_order`.

    The frame indices (timestamps given to the processor) stay as they are, so the prompt has
    the same video grid and temporal positions; only the pictures move.
    """
    order = shuffled_order(sample.frames.shape[0], seed)
    return dataclasses.replace(sample, frames=sample.frames[order])


@dataclasses.dataclass
class TemporalResult:
    """The temporal rule over a batch.

    Args:
        bonus: float64 [B*G], added to the ordered completions' R_acc (0 or TEMPORAL_BONUS).
        applied: bool [B], per prompt: ordered mean >= μ · shuffled mean.
        acc_ordered: float64 [B], mean R_acc of a prompt's ordered completions.
        acc_shuffled: float64 [B], mean R_acc of its shuffled completions.
    """

    bonus: np.ndarray
    applied: np.ndarray
    acc_ordered: np.ndarray
    acc_shuffled: np.ndarray


def temporal_bonus(acc_ordered: Sequence[float], acc_shuffled: Sequence[float],
                   num_generations: int, num_shuffled: int, mu: float = TEMPORAL_MU,
                   bonus: float = TEMPORAL_BONUS, threshold: float = ACC_THRESHOLD
                   ) -> TemporalResult:
    """T-GRPO's rule per prompt (see the module docstring).

    Args:
        acc_ordered: R_acc of the B*G ordered completions, prompt-major.
        acc_shuffled: R_acc of the B*G' shuffled completions, prompt-major (G' = G // 2).
        num_generations: G.
        num_shuffled: G'.
        mu, bonus, threshold: μ, the bonus, and the R_acc a completion must exceed.

    Returns:
        TemporalResult.

    Raises:
        ValueError: the lengths do not make the same number of groups.
    """
    a = np.asarray(acc_ordered, np.float64)
    s = np.asarray(acc_shuffled, np.float64)
    if num_generations < 1 or num_shuffled < 1 or a.size % num_generations or \
            s.size % num_shuffled or a.size // num_generations != s.size // num_shuffled:
        raise ValueError(f"{a.size} ordered and {s.size} shuffled scores do not make the same "
                         f"number of groups of {num_generations} and {num_shuffled}")
    a_grp = a.reshape(-1, num_generations)  # (B, G)
    mean_a = a_grp.mean(axis=1)
    mean_s = s.reshape(-1, num_shuffled).mean(axis=1)  # (B,)
    applied = mean_a >= mu * mean_s
    out = np.where(applied[:, None] & (a_grp > threshold), bonus, 0.0).reshape(-1)
    return TemporalResult(bonus=out, applied=applied, acc_ordered=mean_a, acc_shuffled=mean_s)


def length_reward(acc: Sequence[float], lengths: Sequence[int],
                  token_range: tuple[int, int] = LENGTH_RANGE, bonus: float = LENGTH_BONUS,
                  threshold: float = ACC_THRESHOLD) -> np.ndarray:
    """+bonus for each completion with R_acc > threshold and low <= tokens <= high.

    Args:
        acc: R_acc per completion (before the temporal bonus).
        lengths: completion tokens per completion (the completion mask's sum, EOS included).

    Returns:
        float64 [N].
    """
    a = np.asarray(acc, np.float64)
    n = np.asarray(lengths, np.int64)
    if a.shape != n.shape:
        raise ValueError(f"{a.size} accuracies for {n.size} completion lengths")
    low, high = token_range
    return np.where((a > threshold) & (n >= low) & (n <= high), bonus, 0.0)
