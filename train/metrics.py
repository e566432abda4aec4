"""Training metrics: one JSON line per logged step, and the same scalars to TensorBoard.

Only rank 0 writes. Across ranks, metrics are reduced first (`reduce_metrics`): counts are
summed, `*_max` keys take the max, everything else is averaged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

SUM_KEYS = ("no_prior", "no_prior_total", "samples")


def merge_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine the metrics of one step's micro-batches by reduce_metrics' rule (sums for SUM_KEYS,
    max for "_max" keys, else the mean of the parts that have a value; NaN where none has).
    """
    out = {}
    for key in parts[0]:
        values = np.array([p[key] for p in parts], dtype=np.float64)
        if key in SUM_KEYS:
            out[key] = float(np.nansum(values))
        elif np.isnan(values).all():
            out[key] = math.nan
        elif key.endswith("_max"):
            out[key] = float(np.nanmax(values))
        else:
            out[key] = float(np.nanmean(values))
    return out


def reduce_metrics(metrics: dict[str, float], device: torch.device | str = "cpu"
                   ) -> dict[str, float]:
    """Combine one step's metrics over the ranks of torch.distributed (a no-op alone).

    Args:
        metrics: the same keys on every rank; NaN means "no value on this rank".
        device: where the reduction tensors live (the backend's device).

    Returns:
        dict of floats: sums for SUM_KEYS, max for keys ending in "_max", else the mean of the
        ranks that have a value.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return dict(metrics)
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    has = (~torch.isnan(values)).double()
    filled = torch.nan_to_num(values, nan=0.0)
    maxes = torch.nan_to_num(values, nan=-math.inf)
    torch.distributed.all_reduce(filled)
    torch.distributed.all_reduce(has)
    torch.distributed.all_reduce(maxes, op=torch.distributed.ReduceOp.MAX)
    out = {}
    for i, k in enumerate(keys):
        if k.endswith("_max"):
            out[k] = float(maxes[i]) if math.isfinite(float(maxes[i])) else math.nan
        elif k in SUM_KEYS:
            out[k] = float(filled[i])
        else:
            out[k] = float(filled[i] / has[i]) if has[i] > 0 else math.nan
    return out


class MetricsWriter:
    """Append metrics to `run_dir/metrics.jsonl` and TensorBoard (`run_dir/tensorboard`).

    Args:
        run_dir: the run directory.
        enabled: False on ranks other than 0 (then every call is a no-op).
        tensorboard: also write TensorBoard events.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        """Log the metrics of a step (1-based step number as the x axis)."""
        if not self.enabled:
            return
        row = {"step": step, **{k: (None if math.isnan(v) else v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if not math.isnan(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of `run_dir/metrics.jsonl` (null for NaN)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def completion_rows(step: int, keys: list[tuple[str, str]], completions: list[str],
                    alphas: list, accuracy: list[float], cf: list[float | None]) -> list[dict]:
    """One row per completion of a step for `run_dir/completions.jsonl` (run.log_completions):
    its (video, question), text, R_acc, CF term (null: none) and frame usage α (null: none)."""
    return [{"step": step, "video_id": v, "question_id": q, "completion": text,
             "accuracy": float(acc), "cf": None if c is None else float(c),
             "alpha": None if a is None else [round(float(x), 6) for x in a.tolist()]}
            for (v, q), text, a, acc, c in zip(keys, completions, alphas, accuracy, cf)]
