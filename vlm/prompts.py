"""Video-R1's prompt protocol: the question template, one answer format per problem type.

A question's user text is `build_prompt(question, options, problem_type)`; the video goes before
it in the chat message (`chat_messages`). Used alike by the trainer's samples, the frozen scorer's
generate mode and the focus metrics, so the policy is trained and evaluated on the same prompts.
"""

from __future__ import annotations

from typing import Any

# Video-R1's prompt scheme, in our own words: think inside <think>, answer inside <answer>,
# and an instruction per answer type saying what goes between the answer tags.
QUESTION_TEMPLATE = (
    "{question}\n"
    "Think the question through carefully, step by step, as a person would: you may question "
    "your first impressions, look again at the video and check your reasoning. "
    "Put your reasoning between the <think> </think> tags, then your final answer between the "
    "<answer> </answer> tags."
)
TYPE_TEMPLATES = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) "
                       "within the <answer> </answer> tags.",
    "numerical": " Please provide only the numerical value (e.g., 42 or 3.14) within the "
                 "<answer> </answer> tags.",
    "OCR": " Please transcribe the text shown in the video and provide it within the "
           "<answer> </answer> tags.",
    "free-form": " Please provide your answer in text within the <answer> </answer> tags.",
    "regression": " Please provide only the numerical value (e.g., 42 or 3.14) within the "
                  "<answer> </answer> tags.",
}
PROBLEM_TYPES = tuple(TYPE_TEMPLATES)
# the prompt forms a trainer can ask in: this module's, or the frozen scorer's letter prompt
# (vlm.scorer.letter_prompt: question, options, "answer with the letter"; no tags)
PROMPTS = ("video-r1", "letter")


def problem_type_of(problem_type: str, options: list[str]) -> str:
    """The Video-R1 answer type of a question; an empty type is inferred from the options."""
    if not problem_type:
        return "multiple choice" if options else "free-form"
    if not isinstance(problem_type, str) or problem_type not in TYPE_TEMPLATES:
        raise ValueError(f"problem_type {problem_type!r} unknown; the trainer knows "
                         f"{list(PROBLEM_TYPES)} (Video-R1 types)")
    return problem_type


def build_prompt(question: str, options: list[str], problem_type: str) -> str:
    """The user text of a sample (the video goes before it in the chat message).

    Args:
        question: the question text.
        options: answer options like "A. a cat" (multiple choice), else empty.
        problem_type: one of PROBLEM_TYPES.

    Returns:
        str: question (+ options) + the think/answer instruction + the type's answer format.
    """
    body = question.strip()
    if problem_type == "multiple choice" and options:
        body += "\nOptions:\n" + "\n".join(options)
    return QUESTION_TEMPLATE.format(question=body) + TYPE_TEMPLATES[problem_type]


def chat_messages(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the video, then the prompt text (Qwen2.5-VL chat format)."""
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]


def question_problem(problem_type: str, options: list[str], answer: str) -> str | None:
    """Why a question cannot be trained on (unknown type, empty answer), or None when it can."""
    try:
        problem_type_of(problem_type, options)
    except ValueError as err:
        return str(err)
    if not str(answer).strip():
        return "its answer (solution) is empty"
    return None
