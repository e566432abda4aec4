"""Captions and multiple-choice questions about world objects, from templates.

Captions name one object ("a red triangle", "a photo with a red triangle", ...); question forms
ask for one attribute given the other ("What colour is the triangle?" -> "red", "What shape is
the red object?" -> "triangle"). A multiple-choice question takes its wrong options from the
same vocabulary and its answer letter from the caller's rng.

Example:
    >>> q = make_question(np.random.default_rng(0), WorldObject("triangle", "red", .2, .5, .5))
    >>> q.question, q.options, q.answer
    ('What colour is the triangle?', ['A. blue', 'B. red', 'C. cyan', 'D. green'], 'B')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .objects import COLOURS, SHAPES, WorldObject

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}",
    "a photo with a {colour} {shape}",
    "a video frame with a {colour} {shape}",
    "there is a {colour} {shape} in the picture",
    "a {colour} {shape} drawn on a frame",
)
ASKED = ("colour", "shape")  # the attribute a question asks for
QUESTION_TEMPLATES: dict[str, str] = {
    "colour": "What colour is the {shape}?",
    "shape": "What shape is the {colour} object?",
}
LETTERS = "ABCDEFGH"


def caption(obj: WorldObject, template: int = 0) -> str:
    """The object's caption from CAPTION_TEMPLATES[template] ("a red triangle" for 0)."""
    return CAPTION_TEMPLATES[template].format(colour=obj.colour, shape=obj.shape)


def random_caption(rng: np.random.Generator, obj: WorldObject) -> str:
    """A caption from a template drawn by rng (CLIP training text)."""
    return caption(obj, int(rng.integers(len(CAPTION_TEMPLATES))))


def question_text(obj: WorldObject, asked: str) -> str:
    """The question asking for `asked` ("colour" or "shape") of the object."""
    if asked not in QUESTION_TEMPLATES:
        raise ValueError(f"asked={asked!r} unknown; use one of {ASKED}")
    return QUESTION_TEMPLATES[asked].format(colour=obj.colour, shape=obj.shape)


def answer_text(obj: WorldObject, asked: str) -> str:
    """The attribute asked for: the object's colour or shape name."""
    if asked not in QUESTION_TEMPLATES:
        raise ValueError(f"asked={asked!r} unknown; use one of {ASKED}")
    return obj.colour if asked == "colour" else obj.shape


def question_caption(obj: WorldObject, asked: str) -> str:
    """A question form with its answer, as a caption: "What colour is the triangle? red"."""
    return f"{question_text(obj, asked)} {answer_text(obj, asked)}"


def vocabulary(asked: str) -> tuple[str, ...]:
    """The names an answer to `asked` is drawn from (COLOURS or SHAPES)."""
    if asked not in QUESTION_TEMPLATES:
        raise ValueError(f"asked={asked!r} unknown; use one of {ASKED}")
    return tuple(COLOURS) if asked == "colour" else SHAPES


def distractor_exclude(obj: WorldObject, asked: str) -> tuple[str, ...]:
    """Names a distractor must not have so the question stays about `obj` alone.

    "What colour is the triangle?" is answered by the only triangle: distractors are not
    triangles. "What shape is the red object?": distractors are not red.
    """
    return (obj.shape,) if asked == "colour" else (obj.colour,)


@dataclass(frozen=True)
class MCQuestion:
    """A multiple-choice question about one object.

    Args:
        question: the question text.
        options: ["A. red", "B. blue", ...] (the scorer reads the letters).
        answer: the correct letter.
        answer_text: the correct option's text ("red").
        asked: "colour" or "shape".
        target: the object asked about.
    """

    question: str
    options: list[str]
    answer: str
    answer_text: str
    asked: str
    target: WorldObject

    @property
    def choices(self) -> list[str]:
        """The options' texts without letters."""
        return [o.split(". ", 1)[1] for o in self.options]


def make_question(rng: np.random.Generator, obj: WorldObject, asked: str | None = None,
                  n_options: int = 4) -> MCQuestion:
    """A multiple-choice question about `obj`.

    Args:
        rng: draws the asked attribute (when None), the wrong options and the answer's letter.
        obj: the object the question is about.
        asked: "colour" or "shape" (default: drawn by rng).
        n_options: options shown (2 .. size of the vocabulary asked from).

    Returns:
        MCQuestion whose answer letter is uniform over the n_options positions.
    """
    if asked is None:
        asked = ASKED[int(rng.integers(len(ASKED)))]
    vocab = vocabulary(asked)
    if not 2 <= n_options <= min(len(vocab), len(LETTERS)):
        raise ValueError(f"n_options must be in [2, {min(len(vocab), len(LETTERS))}] for a "
                         f"{asked} question, got {n_options}")
    truth = answer_text(obj, asked)
    wrong = [v for v in vocab if v != truth]
    picks = [wrong[i] for i in rng.permutation(len(wrong))[:n_options - 1]]
    pos = int(rng.integers(n_options))
    choices = picks[:pos] + [truth] + picks[pos:]
    options = [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return MCQuestion(question_text(obj, asked), options, LETTERS[pos], truth, asked, obj)
