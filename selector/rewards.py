"""Selector rewards as plain callables: `(samples, subsets) -> list[float | None]`.

`samples[i]` is the question of row i and `subsets[i]` its chosen candidate positions
(int64 [n], sorted). `None` means the reward does not apply to that row (no needle annotated, a
video that cannot be decoded): the trainer drops the question's group and counts it; it is never
turned into 0. Each reward has a stable `__name__` for metric keys.

- `MarginReward`: METHOD §7 — the frozen reward VLM (`vlm.scorer.FrozenScorer`, the one
  scorer of the project) is shown only the chosen frames, decoded at their cached frame indices;
  m = z_answer - max_other z over the option-letter logits; r = tanh(m / 2).
- `NeedleReward`: 1 when a chosen candidate lies inside the annotated needle frames, else 0.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import SelectorSample

log = logging.getLogger(__name__)


class NeedleReward:
    """1.0 when the subset holds a needle candidate, 0.0 otherwise, None without annotation."""

    __name__ = "needle"

    def __call__(self, samples: Sequence[SelectorSample], subsets: Sequence[np.ndarray]
                 ) -> list[float | None]:
        return [None if s.needle is None else float(s.needle[np.asarray(pos)].any())
                for s, pos in zip(samples, subsets)]


def needle_hits(samples: Sequence[SelectorSample], subsets: Sequence[np.ndarray]
                ) -> list[bool | None]:
    """Per row: does the subset hold a needle candidate (None without ground truth)."""
    return [None if s.needle is None else bool(s.needle[np.asarray(pos)].any())
            for s, pos in zip(samples, subsets)]


def frozen_scorer_class():
    """`vlm.scorer.FrozenScorer`, or a ValueError saying what is missing."""
    try:
        from videocfr.vlm.scorer import FrozenScorer  # noqa: PLC0415
    except ModuleNotFoundError as err:
        raise ValueError(f"the margin reward needs the frozen VLM scorer vlm.scorer "
                         f"({err}); it ships with the evaluate stage (vlm/scorer.py)") \
            from err
    return FrozenScorer


class CandidateFrames:
    """Decoded candidate frames of recently used videos (decode each video's K frames once).

    Args:
        video_root: directory the cache's video paths are relative to.
        max_videos: how many videos' frames to keep (an LRU).
        decode: the decode method of vlm.video.read_frames ("auto", "sequential", "seek").
        decoder: the frame decoder backend: the cache's own (vlm.decoders.cache_decoder).
    """

    def __init__(self, video_root: str | Path, max_videos: int = 4, decode: str = "auto",
                 decoder: str = "decord"):
        self.video_root = Path(video_root)
        self.max_videos = max_videos
        self.decode = decode
        self.decoder = decoder
        self._frames: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, sample: SelectorSample, positions: np.ndarray) -> np.ndarray:
        """uint8 [n, H, W, 3]: the candidates at `positions`, in that order."""
        from videocfr.vlm.video import read_frames  # noqa: PLC0415  (decord: the train extra)

        vid = sample.video.video_id
        frames = self._frames.get(vid)
        if frames is None:
            frames = read_frames(self.video_root / sample.video.path, sample.video.frame_indices,
                                 self.decode, decoder=self.decoder)
            self._frames[vid] = frames
            while len(self._frames) > self.max_videos:
                self._frames.popitem(last=False)
        else:
            self._frames.move_to_end(vid)
        return frames[np.asarray(positions)]


class MarginReward:
    """r = tanh(m / scale) from the frozen scorer shown only the chosen frames.

    Args:
        scorer: an `vlm.scorer.FrozenScorer` (or anything with `margins(items)`).
        frames: callable (sample, positions) -> uint8 [n, H, W, 3] (CandidateFrames).
        scale: 2 in the paper.
        batch_size: subsets per scorer call.
        item_type: the scorer's item class (default vlm.scorer.ScoreItem).

    After a call, `last_margins` holds float32 [rows] margins (NaN where None was returned),
    for the trainer's `margin` metric.
    """

    __name__ = "margin"

    def __init__(self, scorer, frames, scale: float = 2.0, batch_size: int = 8,
                 item_type=None):
        if item_type is None:
            from videocfr.vlm.scorer import ScoreItem as item_type  # noqa: PLC0415, N813

        self._item = item_type
        self.scorer = scorer
        self.frames = frames
        self.scale = scale
        self.batch_size = batch_size
        self.last_margins = np.zeros(0, np.float32)
        self.failures = 0

    def items(self, samples: Sequence[SelectorSample], subsets: Sequence[np.ndarray]
              ) -> list:
        """ScoreItems of the rows (None for a row whose frames cannot be decoded)."""
        out = []
        for s, pos in zip(samples, subsets):
            q = s.question
            if q.problem_type != "multiple choice" or not q.options:
                self.failures += 1  # no option letters: the margin is not defined
                out.append(None)
                continue
            try:
                frames = self.frames(s, pos)
            except (OSError, RuntimeError, ValueError) as err:
                self.failures += 1
                log.warning("margin reward: %s/%s: frames not decodable (%s); reward None",
                            *q.key, err)
                out.append(None)
                continue
            out.append(self._item(frames=frames, question=q.question, options=list(q.options),
                                  answer=q.answer, problem_type=q.problem_type,
                                  timestamps=s.video.timestamps[np.asarray(pos)]))
        return out

    def margins(self, samples: Sequence[SelectorSample], subsets: Sequence[np.ndarray]
                ) -> np.ndarray:
        """float32 [rows]: the scorer's margins (NaN for rows that cannot be scored)."""
        items = self.items(samples, subsets)
        m = np.full(len(items), np.nan, np.float32)
        ok = [i for i, it in enumerate(items) if it is not None]
        for a in range(0, len(ok), self.batch_size):
            idx = ok[a:a + self.batch_size]
            m[idx] = np.asarray(self.scorer.margins([items[i] for i in idx]), np.float32)
        return m

    def __call__(self, samples: Sequence[SelectorSample], subsets: Sequence[np.ndarray]
                 ) -> list[float | None]:
        m = self.margins(samples, subsets)
        self.last_margins = m
        return [None if np.isnan(x) else float(np.tanh(x / self.scale)) for x in m]
