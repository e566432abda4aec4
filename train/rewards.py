"""Rewards of CF-GRPO (METHOD.md §5), in TRL's convention.

A reward is a callable `(prompts, completions, **columns) -> list[float | None]`; `None` means
"does not apply" and is counted, never turned into 0. Completions are strings or TRL
conversational completions (`[{"role": "assistant", "content": "..."}]`). The total reward is

    R = R_acc + R_format + λ · gate(R_acc) · r_cov

- `AccuracyReward` (R_acc), Video-R1 answer types, answers parsed from `<answer>...</answer>`:
  multiple choice: 1 if the option letter equals the solution's, else 0;
  numerical: 1 if both parse as numbers and round(x, 2) match, else 0 (Video-R1 also scores 0
  when exactly one of the two has a decimal point; not reproduced: METHOD says 2-decimal match);
  OCR: clip(1 - WER, 0, 1), word-level Levenshtein / max(1, #reference words);
  free-form: mean of ROUGE-1, ROUGE-2, ROUGE-L F1 (own implementation, lower-cased alphanumeric
  tokens as `rouge_score` tokenises, no stemming; Video-R1 uses `rouge_score` with a stemmer);
  regression: 1 - clip((|ŷ - y| + 1e-9) / (|y| + 1e-9), 0, 1) (Video-R1's relative error).
  An unparseable number scores 0.
- `FormatReward` (R_format): 1 if the whole completion (surrounding whitespace stripped) is
  `<think>...</think>` then `<answer>...</answer>` (whitespace allowed between), else 0.
- `ConsensusFrameReward`: λ · gate(R_acc) · r_cov with r_cov = Σ_g p_g α_g (`alignment="dot"`)
  or 1 - JS(p, α) with base-2 logarithms, so in [0, 1] (`alignment="js"`); gate = clip(R_acc, 0, 1)
  (`"soft"`) or 1[R_acc > 0.01] (`"hard"`, the reference code). Samples without video or prior
  get None, counted in `num_no_prior`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .alpha import check_aligned, group_prior

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")
GATES = ("soft", "hard")
ALIGNMENTS = ("dot", "js")

_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_LETTER_RE = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|\s|$)")
_ROUGE_TOKEN_RE = re.compile(r"[a-z0-9]+")


# --- parsing ---------------------------------------------------------------------------------


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """Text of a completion: a string, or the last message's content of a TRL conversation."""
    if isinstance(completion, str):
        return completion
    if len(completion) and isinstance(completion[-1], dict) and "content" in completion[-1]:
        content = completion[-1]["content"]
        if isinstance(content, list):  # multimodal message: concatenate its text parts
            return "".join(c.get("text", "") for c in content if isinstance(c, dict))
        return str(content)
    raise TypeError(
        f"a completion must be a string or a list of {{'role', 'content'}} messages, got "
        f"{type(completion).__name__}"
    )


def extract_answer(text: str) -> str:
    """Content of the first `<answer>...</answer>`, stripped; "" when there is none."""
    m = _ANSWER_RE.search(text)
    return m.group(1).strip() if m else ""


def parse_solution(solution: str) -> str:
    """Ground truth: the `<answer>` content when tagged (Video-R1 `solution`), else the text."""
    m = _ANSWER_RE.search(solution)
    return m.group(1).strip() if m else solution.strip()


def parse_number(text: str) -> float | None:
    """float of `text` with thousands commas removed; None when it is not a finite number."""
    try:
        x = float(text.replace(",", "").strip())
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def option_letter(text: str) -> str | None:
    """Leading option letter of an answer: "B", "(B)", "B.", "B) cat", "B: cat" -> "B"."""
    m = _LETTER_RE.match(text.strip())
    return m.group(1) if m else None


# --- scores ----------------------------------------------------------------------------------


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER = word-level Levenshtein distance / max(1, #reference words) (may exceed 1)."""
    ref, hyp = reference.split(), hypothesis.split()
    return _edit_distance(ref, hyp) / max(1, len(ref))


def _ngrams(tokens: list[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        key = tuple(tokens[i : i + n])
        counts[key] = counts.get(key, 0) + 1
    return counts


def _f1(overlap: float, n_ref: int, n_hyp: int) -> float:
    if overlap == 0 or n_ref == 0 or n_hyp == 0:
        return 0.0
    p, r = overlap / n_hyp, overlap / n_ref
    return 2 * p * r / (p + r)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_scores(reference: str, hypothesis: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 (clipped n-gram overlap) and ROUGE-L (LCS) F1 scores.

    Tokens: lower-cased runs of [a-z0-9] (the `rouge_score` tokenisation), no stemming.

    Returns:
        {"rouge1": f, "rouge2": f, "rougeL": f}, each in [0, 1].
    """
    ref = _ROUGE_TOKEN_RE.findall(reference.lower())
    hyp = _ROUGE_TOKEN_RE.findall(hypothesis.lower())
    out = {}
    for n in (1, 2):
        r, h = _ngrams(ref, n), _ngrams(hyp, n)
        overlap = sum(min(c, h.get(k, 0)) for k, c in r.items())
        out[f"rouge{n}"] = _f1(overlap, sum(r.values()), sum(h.values()))
    out["rougeL"] = _f1(_lcs(ref, hyp), len(ref), len(hyp))
    return out


def answer_accuracy(answer: str, truth: str, problem_type: str) -> float:
    """R_acc of one parsed answer against the parsed ground truth (see the module docstring).

    Args:
        answer: the completion's `<answer>` content ("" when missing).
        truth: the ground truth answer (already parsed from `<answer>` if tagged).
        problem_type: one of `PROBLEM_TYPES`.

    Returns:
        float in [0, 1].
    """
    if problem_type == "multiple choice":
        got, want = option_letter(answer), option_letter(truth)
        if want is None:
            raise ValueError(f"multiple-choice solution {truth!r} has no option letter (A-Z)")
        return float(got == want)
    if problem_type == "numerical":
        x, y = parse_number(answer), parse_number(truth)
        return float(x is not None and y is not None and round(x, 2) == round(y, 2))
    if problem_type == "OCR":
        return float(min(1.0, max(0.0, 1.0 - word_error_rate(truth, answer))))
    if problem_type == "free-form":
        s = rouge_scores(truth, answer)
        return float(min(1.0, max(0.0, (s["rouge1"] + s["rouge2"] + s["rougeL"]) / 3)))
    if problem_type == "regression":
        x, y = parse_number(answer), parse_number(truth)
        if x is None or y is None:
            return 0.0
        rel = (abs(x - y) + 1e-9) / (abs(y) + 1e-9)
        return float(1.0 - min(1.0, max(0.0, rel)))
    raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}")


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

    Columns: `solution` (Video-R1, "<answer>B</answer>") or `answer` (native records), and
    `problem_type` (one of `PROBLEM_TYPES`; `default_problem_type` when the column is absent).

    Args:
        default_problem_type: type used when no `problem_type` column is passed (None: error).
    """

    __name__ = "accuracy"

    def __init__(self, default_problem_type: str | None = None) -> None:
        if default_problem_type is not None and default_problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"default_problem_type {default_problem_type!r} is not one of {PROBLEM_TYPES}"
            )
        self.default_problem_type = default_problem_type

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                 **columns: Any) -> list[float]:
        n = len(completions)
        truths = _column(columns, ("solution", "answer"), n, "accuracy reward")
        if columns.get("problem_type") is None and self.default_problem_type is not None:
            types = [self.default_problem_type] * n
        else:
            types = _column(columns, ("problem_type",), n, "accuracy reward")
        return [
            answer_accuracy(extract_answer(completion_text(c)), parse_solution(str(t)), pt)
            for c, t, pt in zip(completions, truths, types)
        ]


class FormatReward:
    """R_format: 1.0 when the completion is `<think>...</think><answer>...</answer>`, else 0.0."""

    __name__ = "format"

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                 **columns: Any) -> list[float]:
        return [
            float(_FORMAT_RE.fullmatch(completion_text(c).strip()) is not None)
            for c in completions
        ]


def gate_value(acc: float, gate: str) -> float:
    """gate(R_acc): clip(acc, 0, 1) for "soft", 1[acc > 0.01] for "hard"."""
    if gate == "soft":
        return float(min(1.0, max(0.0, acc)))
    if gate == "hard":
        return float(acc > 0.01)
    raise ValueError(f"gate must be one of {GATES}, got {gate!r}")


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence with base-2 logarithms, in [0, 1] (0·log 0 = 0)."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return min(1.0, max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def coverage(alpha: np.ndarray, p_group: np.ndarray, alignment: str = "dot") -> float:
    """r_cov between α and the grouped prior: Σ_g p_g α_g ("dot") or 1 - JS_2(p, α) ("js").

    Args:
        alpha: float [G], the model's frame usage (sums to 1).
        p_group: float [G], `group_prior(p)` (sums to 1).
        alignment: "dot" or "js".

    Returns:
        float in [0, 1].

    Raises:
        ValueError: lengths differ (never truncated) or unknown alignment.
    """
    a = np.asarray(alpha, np.float64).reshape(-1)
    p = np.asarray(p_group, np.float64).reshape(-1)
    check_aligned(a.shape[0], p.shape[0])
    if alignment == "dot":
        return float(np.dot(p, a))
    if alignment == "js":
        return 1.0 - js_divergence(p, a)
    raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


class ConsensusFrameReward:
    """CF term λ · gate(R_acc) · r_cov (METHOD §5).

    Columns:
        frame_usage: per completion, α float [G] (`train.alpha.frame_usage`) or None.
        prior: per completion, the cached per-frame prior float32 [K] (K = 2G) or None (image
            sample, or a key missing from the cache).
        acc_rewards (optional): per completion R_acc, as already computed by `accuracy` (saves
            recomputing it); else `accuracy(prompts, completions, **columns)` is called.

    Returns None for a completion with no α or no prior, and counts it: `num_no_prior`
    (cumulative) and `last_stats["no_prior"]` (this call). `last_stats` also holds r_cov
    mean/max and the gate mean over the completions that got a CF term (NaN when none did).

    Args:
        lam: λ (>= 0), 5.0 in the reference.
        gate: "soft" (clip(R_acc, 0, 1)) or "hard" (1[R_acc > 0.01]).
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


def combine_rewards(
    parts: dict[str, Sequence[float | None]], weights: dict[str, float] | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """Total reward R per completion: the weighted sum of the parts that apply (None = absent).

    Args:
        parts: reward name (`fn.__name__`) -> its values, one per completion.
        weights: name -> weight (default 1.0 each; unknown names are an error).

    Returns:
        (total, stats): total float32 [N]; stats["rewards/<name>/mean"] over the completions the
        part applies to (NaN when none) and stats["rewards/<name>/none"] = how many got None.

    Raises:
        ValueError: parts differ in length, a weight names no part, or a completion has no
            applicable part at all (never silently 0).
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(parts))
    if unknown:
        raise ValueError(f"weights name unknown reward(s) {unknown}; rewards are {sorted(parts)}")
    lengths = {name: len(v) for name, v in parts.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"reward parts differ in length: {lengths}")
    n = next(iter(lengths.values()), 0)
    total = np.zeros(n, np.float64)
    applied = np.zeros(n, bool)
    stats: dict[str, float] = {}
    for name, values in parts.items():
        w = float(weights.get(name, 1.0))
        present = [v for v in values if v is not None]
        for i, v in enumerate(values):
            if v is not None:
                total[i] += w * float(v)
                applied[i] = True
        stats[f"rewards/{name}/mean"] = float(np.mean(present)) if present else math.nan
        stats[f"rewards/{name}/none"] = float(n - len(present))
    if n and not applied.all():
        raise ValueError(f"completions {np.flatnonzero(~applied).tolist()} got no reward from any "
                         f"of {sorted(parts)}; include a reward that always applies (accuracy)")
    return total.astype(np.float32), stats
