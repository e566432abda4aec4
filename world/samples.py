"""Samples of the world: CLIP (frame, caption) pairs and video QA with a needle frame.

Both draw every random choice from the caller's rng, so a seed fixes a data set. Distractors
never share the attribute a question keys on (`captions.distractor_exclude`): "What colour is
the triangle?" is asked where the needle frame holds the only triangle.

Example:
    >>> bg = Backgrounds()
    >>> s = video_qa(np.random.default_rng(0), bg, n_frames=4)
    >>> s.frames.shape, s.needle_index, s.question.answer     # uint8 [4, 90, 160, 3], 2, 'C'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .captions import MCQuestion, distractor_exclude, make_question, random_caption
from .frames import Backgrounds
from .objects import WorldObject, draw_all, sample_object, sample_objects


@dataclass(frozen=True)
class ClipPair:
    """A frame with objects and a caption naming one of them.

    Args:
        frame: uint8 [H, W, 3].
        caption: the text ("a photo with a red triangle").
        target: the object the caption names.
        objects: every object drawn (target included).
    """

    frame: np.ndarray
    caption: str
    target: WorldObject
    objects: tuple[WorldObject, ...]


def clip_pair(rng: np.random.Generator, backgrounds: Backgrounds,
              n_objects: tuple[int, int] = (1, 3)) -> ClipPair:
    """A background frame with 1..3 objects; the caption names one (others differ in name).

    Args:
        rng: every draw comes from it.
        backgrounds: where the frames come from.
        n_objects: inclusive range of the object count.
    """
    target = sample_object(rng)
    k = int(rng.integers(n_objects[0], n_objects[1] + 1)) - 1
    others: list[WorldObject] = []
    for _ in range(k):
        while True:  # another name than the target's: the caption names one object only
            obj = sample_object(rng, avoid=[target] + others)
            if obj.name != target.name:
                break
        others.append(obj)
    objects = [target] + others
    order = rng.permutation(len(objects))
    objects = [objects[i] for i in order]
    frame = draw_all(backgrounds.frame(rng), objects)
    return ClipPair(frame, random_caption(rng, target), target, tuple(objects))


@dataclass(frozen=True)
class VideoQA:
    """n frames of a shot, a question about an object in one of them (or in none).

    Args:
        frames: uint8 [n, H, W, 3] in temporal order.
        question: the multiple-choice question (its answer is the needle's attribute).
        needle_index: the frame holding the asked object, or None (the needle left out: the
            answer cannot be seen).
        objects: the objects drawn on each frame.
    """

    frames: np.ndarray
    question: MCQuestion
    needle_index: int | None
    objects: tuple[tuple[WorldObject, ...], ...]


def video_qa(rng: np.random.Generator, backgrounds: Backgrounds, n_frames: int = 4, *,
             needle: bool = True, distractors: tuple[int, int] = (0, 2),
             needle_distractors: tuple[int, int] = (0, 1), asked: str | None = None,
             n_options: int = 4, size: float | None = None) -> VideoQA:
    """A video QA sample: the asked object in one random frame, distractors in the others.

    Args:
        rng: every draw comes from it.
        backgrounds: the shot's frames come from one of its clips.
        n_frames: frames shown.
        needle: False leaves the asked object out (the question is drawn the same way).
        distractors: inclusive range of distractors per non-needle frame.
        needle_distractors: inclusive range of distractors beside the needle.
        asked: "colour" / "shape" or None (drawn).
        n_options: options of the question.
        size: fixed relative object size (default: sampled per object).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    target = sample_object(rng, size=size)
    question = make_question(rng, target, asked, n_options)
    exclude = distractor_exclude(target, question.asked)
    at = int(rng.integers(n_frames))
    frames = backgrounds.shot(rng, n_frames)
    if rng.random() < 0.5:
        frames = frames[:, :, ::-1]
    objects: list[tuple[WorldObject, ...]] = []
    out = np.empty_like(frames)
    for i in range(n_frames):
        if i == at and needle:
            k = int(rng.integers(needle_distractors[0], needle_distractors[1] + 1))
            objs = [target] + sample_objects(rng, k, exclude=exclude, size=size, avoid=[target])
        else:
            k = int(rng.integers(distractors[0], distractors[1] + 1))
            objs = sample_objects(rng, k, exclude=exclude, size=size)
        objects.append(tuple(objs))
        out[i] = draw_all(frames[i], objs)
    return VideoQA(out, question, at if needle else None, tuple(objects))
