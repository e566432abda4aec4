"""The selector's training questions, read from a cache (embeddings only: no decode).

Every question of an ok video becomes a `SelectorSample`. Questions are dropped, and counted,
when their video failed in precompute, when the Var(m) filter is on and their margins vary less
than `min_margin_var` (the answer does not depend on which frames are shown), or when the
filter is on and the `margins` addition has no row for them. A cache without the addition while
the filter is on is an error that says how to build it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from videocfr.cache_format import Cache, CacheError, QuestionRecord, VideoRecord
from videocfr.cache_format.keys import video_r1_key

from .config import SelectorDataConfig
from .policy import SelectorBatch, collate

log = logging.getLogger(__name__)


@dataclass
class SelectorSample:
    """One question with its candidates.

    Attributes:
        video: the cached video record (frame indices, embeddings, path).
        question: the cached question record (text, options, answer, text embedding).
        times: float32 [K], candidate times as fractions of the duration.
        needle: bool [K] (candidates inside the annotated needle frames) or None.
    """

    video: VideoRecord
    question: QuestionRecord
    times: np.ndarray
    needle: np.ndarray | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.question.key

    @property
    def num_candidates(self) -> int:
        return self.video.num_sampled


def relative_times(video: VideoRecord) -> np.ndarray:
    """float32 [K]: timestamps / duration clipped to [0, 1] ((k + 0.5) / K without a duration)."""
    k = video.num_sampled
    if video.duration > 0:
        return np.clip(video.timestamps / video.duration, 0.0, 1.0).astype(np.float32)
    return ((np.arange(k) + 0.5) / k).astype(np.float32)


def make_batch(samples: list[SelectorSample]) -> SelectorBatch:
    """The padded policy input of some samples."""
    return collate([s.video.embeddings.astype(np.float32) for s in samples],
                   [s.times for s in samples],
                   [s.question.text_embedding.astype(np.float32) for s in samples])


def read_needles(path: str | Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(video_id, question_id) -> needle [start, end) frames, from a JSON list or JSONL file.

    Records without `needle_frames` are skipped; a malformed `needle_frames` is an error
    naming the record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.annotation {path} not found")
    text = path.read_text(encoding="utf-8")
    records = json.loads(text) if path.suffix == ".json" else [
        json.loads(line) for line in text.splitlines() if line.strip()]
    out = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "needle_frames" not in rec:
            continue
        frames = rec["needle_frames"]
        if (not isinstance(frames, list) or len(frames) != 2
                or not all(isinstance(x, int) for x in frames) or frames[1] <= frames[0]):
            raise ValueError(f"{path}: record {i}: needle_frames must be [start, end) integers "
                             f"with end > start, got {frames!r}")
        if "problem_id" in rec and "path" not in rec:
            raise ValueError(f"{path}: record {i}: a Video-R1 record (problem_id) needs its "
                             f"video's `path` to name the cache key")
        key = (video_r1_key(rec) if "problem_id" in rec else
               (str(rec.get("video_id", "")), str(rec.get("question_id", ""))))
        out[key] = (frames[0], frames[1])
    return out


def load_samples(config: SelectorDataConfig, needles_only: bool = False,
                 vlm: str | None = None) -> tuple[list[SelectorSample], dict[str, int]]:
    """Read the training questions.

    Args:
        config: the data section.
        needles_only: keep only questions with annotated needle frames (the needle reward);
            the others are counted as `no_needle`.
        vlm: the training's reward VLM (`margins.vlm_identity`): with the filter on, a margins
            addition computed with another VLM is refused (None: not checked).

    Returns:
        (samples, counts): counts has `questions` (kept), `failed_videos` (questions skipped by
        precompute because their video failed), `low_margin_var`, `no_margins`, `with_needle`.

    Raises:
        CacheError: the filter is on and the cache has no margins addition, or one computed
            with another VLM or on another cache.
    """
    from videocfr.cache_format.additions import load_addition  # noqa: PLC0415

    from .margins import NAME as MARGINS  # noqa: PLC0415
    from .margins import VERSION as MARGINS_VERSION  # noqa: PLC0415
    from .margins import check_source, read_margins  # noqa: PLC0415

    cache = Cache(config.cache_dir)
    counts = {"questions": 0, "failed_videos": int(cache.manifest["counts"].get(
        "skipped_questions", 0)), "low_margin_var": 0, "no_margins": 0, "with_needle": 0,
        "no_needle": 0}
    margins = None
    if config.min_margin_var is not None:
        try:
            addition = load_addition(config.cache_dir, MARGINS, MARGINS_VERSION)
        except CacheError as err:
            raise CacheError(f"data.min_margin_var={config.min_margin_var} filters questions by "
                             f"their margins, but {err}. Run `videocfr precompute margins "
                             f"--cache {config.cache_dir} ...` first, or set "
                             f"data.min_margin_var: null to train on every question") from None
        check_source(config.cache_dir, addition.meta, vlm)
        margins = read_margins(addition)
    needles = read_needles(config.annotation) if config.annotation else {}
    samples: list[SelectorSample] = []
    videos: dict[str, VideoRecord] = {}
    for vid, qid in cache.keys():
        video = videos.get(vid) or videos.setdefault(vid, cache.video(vid))
        if not video.ok:
            counts["failed_videos"] += 1
            log.warning("question %s/%s skipped: video failed (%s)", vid, qid, video.error)
            continue
        if margins is not None:
            m = margins.get((vid, qid))
            if m is None:
                counts["no_margins"] += 1
                continue
            if float(np.var(m)) < config.min_margin_var:
                counts["low_margin_var"] += 1
                continue
        needle = None
        if (vid, qid) in needles:
            start, end = needles[(vid, qid)]
            needle = (video.frame_indices >= start) & (video.frame_indices < end)
            counts["with_needle"] += 1
        elif needles_only:
            counts["no_needle"] += 1
            continue
        samples.append(SelectorSample(video=video, question=cache.question(vid, qid),
                                      times=relative_times(video), needle=needle))
        if config.max_questions is not None and len(samples) >= config.max_questions:
            break
    counts["questions"] = len(samples)
    log.info("selector data: %d questions kept; Var(m) filter %s: dropped %d below it, %d "
             "without margins; %d skipped in precompute (failed videos); %d without needle "
             "frames (needle reward)", len(samples),
             "off" if config.min_margin_var is None else f"at {config.min_margin_var}",
             counts["low_margin_var"], counts["no_margins"], counts["failed_videos"],
             counts["no_needle"])
    if not samples:
        raise CacheError(f"no training question left in {config.cache_dir} (counts: {counts}); "
                         f"lower data.min_margin_var or check the cache")
    return samples, counts


def step_questions(num: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of the questions of a step: a seeded permutation per epoch (resumable by step).

    Returns:
        int64 [batch_size] (wrapping into the next epoch's permutation when needed).
    """
    out, perms = [], {}
    for j in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(j, num)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(num)
        out.append(perms[epoch][i])
    return np.asarray(out, np.int64)
