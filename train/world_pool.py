"""Encoded videos shown more than once: the question stages' tower work, done once per video.

The question stages keep the vision tower frozen (`VlmTrainConfig.train_tower` False), so a
video's merged tokens are the same whenever it is shown. `VideoPool` keeps a ring buffer of
encoded videos per frame count; each step encodes `fresh` new videos (processor and tower, no
grad) into it and draws the batch from it, each with a **question drawn anew**: any object whose
asked key no other object of the video shares ("What colour is the triangle?" where it is the only
triangle), or, for a sample without the needle, a key no object has. The letter, the options and
the frame rate are drawn anew too, so a video shown again is a new question. The language model
gets the tokens as `mm_encoder_outputs` and places them and computes its 3-D positions itself,
exactly as from pixels (tests/test_world_pool.py checks the logits against the pixel path).

Measured (2 cores, one thread, batch 16, n = 4): a fresh batch costs about 62 ms of processor
and 150 ms of tower beside 146 ms of language model forward and backward; with a batch drawn
from the pool and `fresh` = 4, the tower and processor run on a quarter of it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from videocfr.train.world_vision import video_inputs
from videocfr.vlm.prompts import chat_messages
from videocfr.vlm.scorer import letter_prompt
from videocfr.world.captions import ASKED, MCQuestion, make_question
from videocfr.world.frames import Backgrounds
from videocfr.world.objects import COLOURS, SHAPES, WorldObject
from videocfr.world.samples import video_qa


@dataclass(frozen=True)
class EncodedVideo:
    """One video of the pool: the tower's merged tokens and what the generator drew.

    Args:
        tokens: float [t·h·w / merge², D], the tower's output (no grad).
        grid: int64 [3], its video_grid_thw row.
        objects: the objects of each frame (in the order shown).
    """

    tokens: torch.Tensor
    grid: torch.Tensor
    objects: tuple[tuple[WorldObject, ...], ...]


def even_frames(frames: np.ndarray) -> np.ndarray:
    """The frames with an odd count's last frame shown twice (as the scorer shows them)."""
    return frames if len(frames) % 2 == 0 else np.concatenate([frames, frames[-1:]])


def encode(model, processor, samples) -> list[EncodedVideo]:
    """The tower's tokens of each sample's video (VideoQA-like: `.frames`, `.objects`)."""
    out = video_inputs(processor.video_processor, [even_frames(s.frames) for s in samples])
    with torch.no_grad():
        tokens = model.model.get_video_features(out["pixel_values_videos"],
                                                out["video_grid_thw"], return_dict=True)
    return [EncodedVideo(t.detach(), g, s.objects)
            for t, g, s in zip(tokens.pooler_output, out["video_grid_thw"], samples)]


def _key(obj: WorldObject, asked: str) -> str:
    """The name a question keys on: the shape for a colour question, the colour for a shape one."""
    return obj.shape if asked == "colour" else obj.colour


def pooled_question(rng: np.random.Generator, objects, needle: bool,
                    n_options: int = 4) -> MCQuestion | None:
    """A question about a video with these objects (None: none can be asked).

    Args:
        objects: the objects of each frame.
        needle: True asks about an object whose key is unique in the video; False asks about a
            key no object has (its answer cannot be seen).
    """
    flat = [o for frame in objects for o in frame]
    first = int(rng.integers(len(ASKED)))
    for asked in (ASKED[first], ASKED[1 - first]):
        keys = [_key(o, asked) for o in flat]
        if needle:
            unique = [o for o, k in zip(flat, keys) if keys.count(k) == 1]
            if unique:
                return make_question(rng, unique[int(rng.integers(len(unique)))], asked,
                                     n_options)
        else:
            vocab = SHAPES if asked == "colour" else tuple(COLOURS)
            absent = [v for v in vocab if v not in keys]
            if absent:
                key = absent[int(rng.integers(len(absent)))]
                other = tuple(COLOURS)[int(rng.integers(len(COLOURS)))]
                shape, colour = (key, other) if asked == "colour" else (
                    SHAPES[int(rng.integers(len(SHAPES)))], key)
                return make_question(rng, WorldObject(shape, colour, 0.2, 0.5, 0.5), asked,
                                     n_options)
    return None


def prompt_text(processor, question: MCQuestion) -> str:
    """The scorer's letter prompt of a question about one video, as chat text (one
    `<|video_pad|>` where the video goes)."""
    return processor.apply_chat_template(
        chat_messages(letter_prompt(question.question, question.options)),
        add_generation_prompt=True, tokenize=False)


def text_batch(processor, videos: list[EncodedVideo], questions: list[MCQuestion],
               fps: list[float]) -> dict:
    """The model inputs of the questions about these encoded videos, as the processor makes them
    from pixels (left padded), with the tokens as `mm_encoder_outputs`."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    tok = processor.tokenizer
    merge = processor.video_processor.merge_size ** 2
    texts = []
    for v, q in zip(videos, questions):
        text = prompt_text(processor, q)
        if text.count(processor.video_token) != 1:
            raise ValueError(f"the world prompt holds {text.count(processor.video_token)} video "
                             f"placeholders; one expected")
        texts.append(text.replace(processor.video_token,
                                  processor.video_token * (int(v.grid.prod()) // merge)))
    tok.padding_side = "left"
    batch = dict(tok(texts, padding=True, return_tensors="pt"))
    batch["mm_token_type_ids"] = torch.as_tensor(
        processor.create_mm_token_type_ids(batch["input_ids"].tolist()))
    batch["video_grid_thw"] = torch.stack([v.grid for v in videos])
    temporal = processor.video_processor.temporal_patch_size
    batch["second_per_grid_ts"] = torch.tensor([temporal / f for f in fps])
    batch["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(
        pooler_output=tuple(v.tokens for v in videos))}
    return batch


class VideoPool:
    """Encoded videos per frame count, refreshed a few a step (see the module docstring).

    Args:
        model, processor: the world VLM (its tower frozen) and its processor.
        backgrounds: where the videos' frames come from.
        rng: every draw (videos, questions, frame rates).
        stage: the question stage whose sample settings the videos follow (`train.world_vlm.Stage`).
        capacity: videos kept per frame count (the oldest leave first).
        fresh: videos encoded into the pool per draw.
        fill: videos encoded at the first draw of a frame count (default: capacity).
    """

    def __init__(self, model, processor, backgrounds: Backgrounds, rng: np.random.Generator,
                 stage, capacity: int = 256, fresh: int = 4, fill: int | None = None):
        fill = capacity if fill is None else fill
        if not 1 <= fresh <= capacity or not 1 <= fill <= capacity:
            raise ValueError(f"a video pool needs 1 <= fresh, fill <= capacity, got "
                             f"fresh={fresh}, fill={fill}, capacity={capacity}")
        self.model, self.processor, self.backgrounds, self.rng = model, processor, backgrounds, rng
        self.stage, self.capacity, self.fresh, self.fill = stage, capacity, fresh, fill
        self.videos: dict[int, deque] = {}

    def _add(self, n: int, count: int) -> None:
        samples = [video_qa(self.rng, self.backgrounds, n, distractors=self.stage.distractors,
                            needle_distractors=self.stage.needle_distractors)
                   for _ in range(count)]
        pool = self.videos.setdefault(n, deque(maxlen=self.capacity))
        for start in range(0, count, 16):
            pool.extend(encode(self.model, self.processor, samples[start:start + 16]))

    def draw(self, n: int, count: int, needles: np.ndarray, fps):
        """`count` (video, question) pairs at n frames; needles[i] False asks about a key the
        video lacks. The first draw at n fills the pool.

        Returns:
            (videos, questions, frame rates)
        """
        if n not in self.videos:
            self._add(n, self.fill)
        else:
            self._add(n, self.fresh)
        pool = self.videos[n]
        videos, questions = [], []
        while len(videos) < count:
            v = pool[int(self.rng.integers(len(pool)))]
            q = pooled_question(self.rng, v.objects, bool(needles[len(videos)]))
            if q is not None:
                videos.append(v)
                questions.append(q)
        return videos, questions, [fps(self.rng) for _ in range(count)]


def option_letter_ids(tokenizer, questions: list[MCQuestion]) -> torch.Tensor:
    """int64 [B, n_options]: the token of each option's letter ("A" of "A. red")."""
    return torch.tensor([[tokenizer.encode(o[0], add_special_tokens=False)[0]
                          for o in q.options] for q in questions])


def reuse_fresh(batch: int, reuse: float) -> int:
    """Videos encoded per step so that each is shown about `reuse` times."""
    return max(1, math.ceil(batch / reuse))
