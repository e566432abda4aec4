"""The rewards phase of a step: every reward term of METHOD §5 for a batch of rollouts.

    R = R_acc + temporal bonus + format_weight · R_format + length reward
        + λ · gate(R_acc) · r_cov + extra rewards

The CF gate, the temporal rule and the length reward all read R_acc before the temporal bonus
(as VideoCFR's trainer does). A term that does not apply to a completion (None: no prior, or an
extra reward that skips it) is left out of its sum and counted, never turned into 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import RewardConfig
from .rewards import AccuracyReward, ConsensusFrameReward, FormatReward
from .temporal import TemporalResult, length_reward, temporal_bonus

BUILTIN_NAMES = ("accuracy", "format", "cf", "temporal", "len_control")


@dataclass
class StepScores:
    """Rewards of one batch of B*G ordered completions.

    Args:
        total: float32 [B*G], R per completion (what the advantages are computed from).
        accuracy: R_acc per completion, before the temporal bonus.
        format: R_format per completion (unweighted).
        cf: the CF term per completion, None where it does not apply.
        temporal: the temporal bonus per completion, or None when reward.temporal is off.
        length: the length reward per completion, or None when reward.len_control is off.
        extra: extra rewards by name, values per completion (None: does not apply).
        metrics: scalar metrics of the phase (see `StepRewards.__call__`).
    """

    total: np.ndarray
    accuracy: list[float]
    format: list[float]
    cf: list[float | None]
    temporal: TemporalResult | None = None
    length: np.ndarray | None = None
    extra: dict[str, list[float | None]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else math.nan


class StepRewards:
    """All reward terms of a run, applied to one batch.

    Args:
        cfg: the reward section of the train config.
        extra_rewards: more TRL-style rewards `(prompts, completions, **columns) ->
            list[float | None]`, logged as reward/<__name__>.
    """

    def __init__(self, cfg: RewardConfig,
                 extra_rewards: Sequence[Callable[..., list[float | None]]] = ()) -> None:
        self.cfg = cfg
        self.accuracy = AccuracyReward(mode=cfg.answer_mode)
        self.format = FormatReward()
        self.cf = ConsensusFrameReward(cfg.cf_lambda, cfg.gate, cfg.alignment, self.accuracy)
        self.cf_seconds = 0.0  # wall time of the last call's CF term (r_cov)
        self.extra = {getattr(fn, "__name__", type(fn).__name__): fn for fn in extra_rewards}
        clash = sorted(set(self.extra) & set(BUILTIN_NAMES))
        if clash or len(self.extra) != len(extra_rewards):
            raise ValueError(f"extra rewards need distinct names other than {BUILTIN_NAMES}; "
                             f"got {[getattr(f, '__name__', None) for f in extra_rewards]}")

    def __call__(self, completions: Sequence[str], columns: dict[str, list[Any]], *,
                 frame_usage: Sequence[Any], priors: Sequence[Any],
                 lengths: Sequence[int], num_generations: int,
                 shuffled: Sequence[str] | None = None,
                 shuffled_columns: dict[str, list[Any]] | None = None,
                 num_shuffled: int = 0) -> StepScores:
        """Score a batch.

        Args:
            completions: B*G ordered completion texts, prompt-major.
            columns: per-completion columns (answer, problem_type, options, ...).
            frame_usage: α per completion (float [G_t]) or None.
            priors: the cached prior per completion (float32 [K]) or None.
            lengths: completion tokens per completion (EOS included).
            num_generations: G.
            shuffled: B*G' completions on shuffled frames (required when reward.temporal).
            shuffled_columns: their columns.
            num_shuffled: G'.

        Returns:
            StepScores; metrics: reward, reward/accuracy, reward/format, reward/cf,
            r_cov_mean, r_cov_max, no_prior, reward/<extra>; with temporal: reward/temporal
            (mean bonus), temporal/applied (fraction of prompts), temporal/acc_ordered,
            temporal/acc_shuffled; with len_control: reward/len_control.
        """
        cfg = self.cfg
        acc = self.accuracy(None, completions, **columns)
        fmt = self.format(None, completions, **columns)
        t0 = time.perf_counter()
        cf = self.cf(None, completions, frame_usage=frame_usage, prior=priors, acc_rewards=acc,
                     **columns)
        self.cf_seconds = time.perf_counter() - t0
        extra = {name: fn(None, completions, **columns) for name, fn in self.extra.items()}
        total = np.asarray(acc, np.float64) + cfg.format_weight * np.asarray(fmt, np.float64)
        for part in (cf, *extra.values()):
            total += np.array([0.0 if v is None else float(v) for v in part])
        scores = StepScores(total=total, accuracy=acc, format=fmt, cf=cf, extra=extra)
        metrics = {
            "reward/accuracy": _mean(acc), "reward/format": _mean(fmt), "reward/cf": _mean(cf),
            "r_cov_mean": self.cf.last_stats["r_cov_mean"],
            "r_cov_max": self.cf.last_stats["r_cov_max"],
            "no_prior": float(sum(c is None for c in cf)),
            **{f"reward/{name}": _mean(values) for name, values in extra.items()},
        }
        if cfg.temporal:
            if shuffled is None or shuffled_columns is None:
                raise ValueError("reward.temporal needs the shuffled rollouts' completions")
            acc_shuffled = self.accuracy(None, shuffled, **shuffled_columns)
            scores.temporal = temporal_bonus(acc, acc_shuffled, num_generations, num_shuffled)
            total += scores.temporal.bonus
            metrics.update({
                "reward/temporal": float(scores.temporal.bonus.mean()),
                "temporal/applied": float(scores.temporal.applied.mean()),
                "temporal/acc_ordered": float(scores.temporal.acc_ordered.mean()),
                "temporal/acc_shuffled": float(scores.temporal.acc_shuffled.mean()),
            })
        if cfg.len_control:
            scores.length = length_reward(acc, lengths)
            total += scores.length
            metrics["reward/len_control"] = float(scores.length.mean())
        scores.total = total.astype(np.float32)
        metrics["reward"] = float(total.mean())
        scores.metrics = metrics
        return scores
