"""The Video-R1 answer protocol: parse a completion's answer and score it per problem type.

Shared by the trainer's accuracy reward (train.rewards) and evaluation's generate scorer
(vlm.scorer / evaluate.qa). R_acc scores the stripped text inside the first
`<answer>...</answer>` the way Video-R1's `accuracy_reward` does (mode "video-r1", the default):
multiple choice: 1 when the two strings are equal (`B.` != `B`; `A B C D` never counts);
numerical: 0 when exactly one of the two has a decimal point or comma, else round(x, 2) equal
after removing commas; OCR: clip(1 - WER, 0, 1); free-form: mean F of ROUGE-1/2/L from the
`rouge_score` package with its Porter stemmer; regression: 1 - clip((|ŷ - y| + 1e-9) /
(|y| + 1e-9), 0, 1). Deliberate fixes: a non-finite number scores 0 (Video-R1 pays NaN 1.0)
and a ground truth without `<answer>` tags is the answer itself (Video-R1 reads it as "").
Mode "lenient" also accepts, for multiple choice only, the truth's letter with surrounding
punctuation (`(B)`, `B.`) or followed by its exact option text (`B. a dog`) — never two
letters, never a word that starts with the letter. Mode "final-letter" is for models that answer
without tags (the world VLM, trained on `vlm.scorer.letter_prompt`): the answer is the
completion's last word with its punctuation stripped ("red B" -> "B"), matched exactly.

Bad input never raises: no `<answer>` or an empty one is the answer "", two blocks take the
first, an unparseable or non-finite number scores 0. Only an unknown problem type or mode raises.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Sequence
from typing import Any

from .prompts import PROBLEM_TYPES

ANSWER_MODES = ("video-r1", "lenient", "final-letter")

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


def completion_answer(text: str, mode: str = "video-r1") -> str:
    """The answer a completion gives: its first `<answer>` content (`extract_answer`), or, in
    mode "final-letter", its last whitespace-separated word without punctuation ("" if none)."""
    if mode == "final-letter":
        words = text.split()
        return words[-1].strip(_PUNCT_SPACE) if words else ""
    return extract_answer(text)


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
    if mode != "lenient":  # "video-r1" and "final-letter" match exactly
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
        mode: "video-r1" (Video-R1's matching, default), "lenient" (multiple choice only) or
            "final-letter" (exact matching; the answer came from `completion_answer`).
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


def is_well_formed(text: str) -> bool:
    """True when the whole text is `<think>...</think>` then `<answer>...</answer>`."""
    return _FORMAT_RE.fullmatch(text) is not None
