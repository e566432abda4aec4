"""Rewards of CF-GRPO (METHOD.md §5), in TRL's convention; docs/rewards.md has the details.

A reward is a callable `(prompts, completions, **columns) -> list[float | None]`; `None` means
"does not apply" and is counted, never turned into 0. Completions are strings or TRL
conversational completions (`[{"role": "assistant", "content": "..."}]`). The total reward is

    R = R_acc (+ temporal bonus) + R_format (+ length reward) + λ · gate(R_acc) · r_cov

- `AccuracyReward` (R_acc) scores the stripped text inside the first `<answer>...</answer>` the
  way Video-R1's `accuracy_reward` does (mode "video-r1", the default):
  multiple choice: 1 when the two strings are equal (`B.` != `B`; `A B C D` never counts);
  numerical: 0 when exactly one of the two has a decimal point or comma, else round(x, 2) equal
  after removing commas; OCR: clip(1 - WER, 0, 1); free-form: mean F of ROUGE-1/2/L from the
  `rouge_score` package with its Porter stemmer; regression: 1 - clip((|ŷ - y| + 1e-9) /
  (|y| + 1e-9), 0, 1). Deliberate fixes: a non-finite number scores 0 (Video-R1 pays NaN 1.0),
  each row uses its own problem type (Video-R1 uses the first row's for the whole batch), and a
  ground truth without `<answer>` tags is the answer itself (Video-R1 reads it as "").
  Mode "lenient" also accepts, for multiple choice only, the truth's letter with surrounding
  punctuation (`(B)`, `B.`) or followed by its exact option text (`B. a dog`) — never two
  letters, never a word that starts with the letter. Mode "final-letter" reads untagged
  completions: the answer is the last word ("red B" -> "B"; the world VLM's form).
- `FormatReward` (R_format): 1 when the whole completion is `<think>...</think>` then
  `<answer>...</answer>` (whitespace allowed between, none around: Video-R1's fullmatch).
- `ConsensusFrameReward`: λ · gate(R_acc) · r_cov with r_cov = Σ_g p_g α_g (`alignment="dot"`)
  or 1 - JS(p, α) with base-2 logarithms, so in [0, 1] (`alignment="js"`); gate = clip(R_acc, 0, 1)
  (`"soft"`), 1[R_acc > 0.01] (`"hard"`, the reference code) or 1 (`"none"`, the ungated
  ablation). Samples without video or prior
  get None, counted in `num_no_prior`.

Bad input never raises: no `<answer>` or an empty one is the answer "", two blocks take the
first, an unparseable or non-finite number scores 0. Only an unknown problem type raises (the
data path rejects those when it loads the records).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from videocfr.vlm.alpha import group_prior
from videocfr.vlm.answers import (
    ANSWER_MODES,
    PROBLEM_TYPES,
    answer_accuracy,
    completion_answer,
    completion_text,
    is_well_formed,
)
from videocfr.vlm.coverage import ALIGNMENTS, check_aligned, coverage

from .config import GATES

# --- TRL reward callables --------------------------------------------------------------------


def _column(columns: dict[str, Any], names: Sequence[str], n: int, what: str) -> list:
    for name in names:
        if name in columns and columns[name] is not None:
            values = list(columns[name])
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
            return values
    raise ValueError(
        f"{what}: none of the columns {list(names)} was passed; pass it as a keyword "
        f"(got {sorted(columns)})"
    )


class AccuracyReward:
    """R_acc for the five Video-R1 answer types (see the module docstring).

    Columns: `solution` (Video-R1, "<answer>B</answer>") or `answer` (native records, the bare
    answer), `problem_type` (one of `PROBLEM_TYPES`, per row; `default_problem_type` when the
    column is absent) and, optionally, `options` (per row, used by the lenient mode).

    Args:
        default_problem_type: type used when no `problem_type` column is passed (None: error).
        mode: "video-r1" (default) or "lenient" (see `answer_accuracy`).
    """

    __name__ = "accuracy"

    def __init__(self, default_problem_type: str | None = None, mode: str = "video-r1") -> None:
        if default_problem_type is not None and default_problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"default_problem_type {default_problem_type!r} is not one of {PROBLEM_TYPES}"
            )
        if mode not in ANSWER_MODES:
            raise ValueError(f"answer mode {mode!r} unknown; use one of {ANSWER_MODES}")
        self.default_problem_type = default_problem_type
        self.mode = mode

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                 **columns: Any) -> list[float]:
        n = len(completions)
        truths = _column(columns, ("solution", "answer"), n, "accuracy reward")
        if columns.get("problem_type") is None and self.default_problem_type is not None:
            types = [self.default_problem_type] * n
        else:
            types = _column(columns, ("problem_type",), n, "accuracy reward")
        options = (_column(columns, ("options",), n, "accuracy reward")
                   if columns.get("options") is not None else [None] * n)
        return [
            answer_accuracy(completion_answer(completion_text(c), self.mode), str(t), pt,
                            mode=self.mode, options=o)
            for c, t, pt, o in zip(completions, truths, types, options)
        ]


class FormatReward:
    """R_format: 1.0 when the completion is `<think>...</think><answer>...</answer>`, else 0.0.

    The whole text must match (Video-R1's `re.fullmatch`): leading or trailing text, even a
    newline, scores 0.
    """

    __name__ = "format"

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                 **columns: Any) -> list[float]:
        return [float(is_well_formed(completion_text(c))) for c in completions]


def gate_value(acc: float, gate: str) -> float:
    """gate(R_acc): clip(acc, 0, 1) for "soft", 1[acc > 0.01] for "hard", 1 for "none"."""
    if gate == "soft":
        return float(min(1.0, max(0.0, acc)))
    if gate == "hard":
        return float(acc > 0.01)
    if gate == "none":
        return 1.0
    raise ValueError(f"gate must be one of {GATES}, got {gate!r}")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


class ConsensusFrameReward:
    """CF term λ · gate(R_acc) · r_cov (METHOD §5).

    Columns:
        frame_usage: per completion, α float [G] (`vlm.alpha.frame_usage`) or None.
        prior: per completion, the cached per-frame prior float32 [K] (K = 2G) or None (image
            sample, or a key missing from the cache).
        acc_rewards (optional): per completion R_acc, as already computed by `accuracy` (saves
            recomputing it); else `accuracy(prompts, completions, **columns)` is called.

    Returns None for a completion with no α or no prior, and counts it: `num_no_prior`
    (cumulative) and `last_stats["no_prior"]` (this call). `last_stats` also holds r_cov
    mean/max and the gate mean over the completions that got a CF term (NaN when none did).

    Args:
        lam: λ (>= 0), 5.0 in the reference.
        gate: "soft" (clip(R_acc, 0, 1)), "hard" (1[R_acc > 0.01]) or "none" (1: an ablation).
        alignment: "dot" (Σ p_g α_g) or "js" (1 - JS with base-2 logs).
        accuracy: the R_acc reward used for the gate when `acc_rewards` is not passed.
    """

    __name__ = "consensus_frame"

    def __init__(self, lam: float = 5.0, gate: str = "soft", alignment: str = "dot",
                 accuracy: AccuracyReward | None = None) -> None:
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lam must be a finite number >= 0, got {lam}")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.lam = float(lam)
        self.gate = gate
        self.alignment = alignment
        self.accuracy = accuracy if accuracy is not None else AccuracyReward()
        self.num_no_prior = 0
        self.last_stats: dict[str, float] = {}

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                 **columns: Any) -> list[float | None]:
        n = len(completions)
        alphas = _column(columns, ("frame_usage",), n, "consensus frame reward")
        priors = _column(columns, ("prior",), n, "consensus frame reward")
        if columns.get("acc_rewards") is not None:
            accs = _column(columns, ("acc_rewards",), n, "consensus frame reward")
        else:
            accs = self.accuracy(prompts, completions, **columns)
        out: list[float | None] = []
        covs, gates = [], []
        for i, (alpha, prior, acc) in enumerate(zip(alphas, priors, accs)):
            if alpha is None or prior is None:
                out.append(None)
                continue
            p_group = group_prior(_to_numpy(prior))
            a = _to_numpy(alpha).reshape(-1)
            check_aligned(a.shape[0], p_group.shape[0], where=f"completion {i}")
            r_cov = coverage(a, p_group, self.alignment)
            g = gate_value(float(acc), self.gate)
            covs.append(r_cov)
            gates.append(g)
            out.append(self.lam * g * r_cov)
        no_prior = n - len(covs)
        self.num_no_prior += no_prior
        self.last_stats = {
            "no_prior": float(no_prior),
            "r_cov_mean": float(np.mean(covs)) if covs else math.nan,
            "r_cov_max": float(np.max(covs)) if covs else math.nan,
            "gate_mean": float(np.mean(gates)) if gates else math.nan,
        }
        return out
