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
  letters, never a word that starts with the letter.
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

import functools
import math
import re
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from .alpha import check_aligned, group_prior
from .config import ALIGNMENTS, ANSWER_MODES, GATES

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")

_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
# "B. text", "(B) text", "B: text", "B text": the option letter, then the option's text
_LETTER_TEXT_RE = re.compile(r"^[(\[]?([A-Z])[)\]]?(?:[.:)]\s*|\s+)(.+)$", re.DOTALL)
_PUNCT_SPACE = string.punctuation + string.whitespace


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
    """float of `text` with commas removed (Python's float syntax); None when that fails or the
    number is not finite (`nan`, `inf`, `1e400`)."""
    try:
        x = float(text.replace(",", ""))
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _has_decimal_mark(text: str) -> bool:
    return "." in text or "," in text


def _bare_letter(text: str) -> str | None:
    """"B", "(B)", "B.", "**B**" -> "B": one capital letter once punctuation is stripped."""
    core = text.strip(_PUNCT_SPACE)
    return core if len(core) == 1 and "A" <= core <= "Z" else None


def _option_texts(options: Sequence[str] | None) -> dict[str, str]:
    """{"B": "a dog"} from options like "B. a dog" (options in another form are ignored)."""
    out = {}
    for option in options or ():
        m = _LETTER_TEXT_RE.match(str(option).strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


# --- scores per problem type -----------------------------------------------------------------


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER = word-level Levenshtein distance / max(1, #reference words) (may exceed 1)."""
    ref, hyp = reference.split(), hypothesis.split()
    prev = list(range(len(hyp) + 1))
    for i, x in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, y in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1] / max(1, len(ref))


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    try:
        from rouge_score import rouge_scorer  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - the train extra installs it
        raise ImportError("free-form answers need the `rouge_score` package: pip install "
                          "rouge_score (it is in the `train` extra)") from err
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_scores(reference: str, hypothesis: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of `rouge_score` with its Porter stemmer.

    Its tokenizer lower-cases and keeps runs of [a-z0-9] (so non-Latin text has no tokens and
    scores 0, as in Video-R1).

    Returns:
        {"rouge1": f, "rouge2": f, "rougeL": f}, each in [0, 1].
    """
    scores = _rouge_scorer().score(reference, hypothesis)
    return {name: float(s.fmeasure) for name, s in scores.items()}


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def multiple_choice_score(answer: str, truth: str, mode: str = "video-r1",
                          options: Sequence[str] | None = None) -> float:
    """1.0 when the answer is the truth (see the module docstring for "lenient"), else 0.0."""
    if answer.strip() == truth.strip():
        return 1.0
    if mode == "video-r1":
        return 0.0
    letter = _bare_letter(truth)
    if letter is None:  # a truth that is not an option letter ("Yes"): exact match only
        return 0.0
    if _bare_letter(answer) == letter:
        return 1.0
    m = _LETTER_TEXT_RE.match(answer.strip())
    if m is None or m.group(1) != letter:
        return 0.0
    text = _option_texts(options).get(letter)
    return float(text is not None and m.group(2).strip() == text)


def numerical_score(answer: str, truth: str) -> float:
    """Video-R1's rule: 0 when exactly one has a decimal point or comma, else round(x, 2) ==."""
    if _has_decimal_mark(answer) != _has_decimal_mark(truth):
        return 0.0
    x, y = parse_number(answer), parse_number(truth)
    if x is None or y is None:
        return 0.0
    return float(round(x, 2) == round(y, 2))


def ocr_score(answer: str, truth: str) -> float:
    """clip(1 - WER(truth, answer), 0, 1); words split on whitespace, case-sensitive."""
    return _clip01(1.0 - word_error_rate(truth, answer))


def free_form_score(answer: str, truth: str) -> float:
    """Mean of the ROUGE-1, ROUGE-2 and ROUGE-L F-measures (stemmed), in [0, 1]."""
    s = rouge_scores(truth, answer)
    return _clip01((s["rouge1"] + s["rouge2"] + s["rougeL"]) / 3)


def regression_score(answer: str, truth: str) -> float:
    """1 - clip((|ŷ - y| + 1e-9) / (|y| + 1e-9), 0, 1); 0 for an unparseable/non-finite number.

    As in Video-R1, a truth of 0 scores 0 even for the answer 0 (the ratio is then 1).
    """
    x, y = parse_number(answer), parse_number(truth)
    if x is None or y is None:
        return 0.0
    rel = (abs(x - y) + 1e-9) / (abs(y) + 1e-9)
    return 1.0 - _clip01(rel)


def answer_accuracy(answer: str, truth: str, problem_type: str, *, mode: str = "video-r1",
                    options: Sequence[str] | None = None) -> float:
    """R_acc of one parsed answer against the ground truth (see the module docstring).

    Args:
        answer: the completion's `<answer>` content (`extract_answer`; "" when missing).
        truth: the ground truth: the bare answer ("B", "3.5") or a Video-R1 solution
            ("<answer>B</answer>"), whose `<answer>` content is used.
        problem_type: one of `PROBLEM_TYPES`.
        mode: "video-r1" (Video-R1's matching, default) or "lenient" (multiple choice only).
        options: the question's options ("B. a dog"); used by "lenient" multiple choice.

    Returns:
        float in [0, 1].

    Raises:
        ValueError: unknown problem_type or mode.
    """
    if mode not in ANSWER_MODES:
        raise ValueError(f"answer mode {mode!r} unknown; use one of {ANSWER_MODES}")
    truth = parse_solution(str(truth))
    answer = str(answer).strip()
    if problem_type == "multiple choice":
        return multiple_choice_score(answer, truth, mode, options)
    if problem_type == "numerical":
        return numerical_score(answer, truth)
    if problem_type == "OCR":
        return ocr_score(answer, truth)
    if problem_type == "free-form":
        return free_form_score(answer, truth)
    if problem_type == "regression":
        return regression_score(answer, truth)
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
            answer_accuracy(extract_answer(completion_text(c)), str(t), pt, mode=self.mode,
                            options=o)
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
        return [float(_FORMAT_RE.fullmatch(completion_text(c)) is not None) for c in completions]


def gate_value(acc: float, gate: str) -> float:
    """gate(R_acc): clip(acc, 0, 1) for "soft", 1[acc > 0.01] for "hard", 1 for "none"."""
    if gate == "soft":
        return float(min(1.0, max(0.0, acc)))
    if gate == "hard":
        return float(acc > 0.01)
    if gate == "none":
        return 1.0
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
