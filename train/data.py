"""Training samples: the (video, question) pairs of a precompute cache, with their prompts.

The prompt is Video-R1's (`vlm.prompts.build_prompt`, think then answer in tags) or, with
`prompt="letter"`, the frozen scorer's letter prompt (`vlm.scorer.letter_prompt`), the text the
world VLM was trained on (score its untagged answers with reward.answer_mode "final-letter").

A sample's frames are the cache's sampled frames, decoded by their stored indices (vlm.video),
so the prior's frame k is the model's frame k. The processor must turn K frames into K/2
temporal groups (Qwen2.5-VL merges two consecutive frames); anything else is an error.

The order of samples is a pure function of (seed, epoch): a resumed run continues where it left
off by step number, with no sampler state to save.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from videocfr.cache_format import Cache, CacheError
from videocfr.vlm.decoders import cache_decoder
from videocfr.vlm.prompts import (
    PROMPTS,
    build_prompt,
    chat_messages,
    problem_type_of,
    question_problem,
)
from videocfr.vlm.scorer import letter_prompt
from videocfr.vlm.video import read_frames, resolve_video_root

log = logging.getLogger(__name__)

@dataclass
class Sample:
    """One (video, question) pair ready for the processor.

    Args:
        video_id, question_id: the cache key of the pair.
        prompt: the user text (build_prompt, or letter_prompt for CacheSamples' "letter").
        answer: ground truth (a letter for multiple choice).
        problem_type: Video-R1 answer type.
        frames: uint8 [K, H, W, 3], the cached sampled frames in order.
        frame_indices: int64 [K], their frame numbers in the file.
        fps: the file's frame rate (for the processor's temporal positions).
        num_frames: frames in the file.
        options: the answer options ("A. a cat"), empty for open questions.
    """

    video_id: str
    question_id: str
    prompt: str
    answer: str
    problem_type: str
    frames: np.ndarray
    frame_indices: np.ndarray
    fps: float
    num_frames: int
    options: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.video_id, self.question_id)


class CacheSamples:
    """The (video, question) pairs of a cache, decoded on access.

    Args:
        cache_dir: a finished cache (manifest.json written by finalize_cache).
        video_root: see resolve_video_root.
        expect_config_hash: refuse a cache made with another precompute config.
        decode: read_frames method ("auto", "sequential", "seek").
        max_samples: keep only the first N pairs (in the cache's key order).
        decoder: the frame decoder backend; None: the one the cache recorded (cache_decoder).
        prompt: "video-r1" (think, then the answer in tags) or "letter" (the scorer's letter
            prompt; multiple-choice questions only).
    """

    def __init__(self, cache_dir: str | Path, video_root: str | None = None,
                 expect_config_hash: str | None = None, decode: str = "auto",
                 max_samples: int | None = None, decoder: str | None = None,
                 prompt: str = "video-r1"):
        if prompt not in PROMPTS:
            raise ValueError(f"prompt {prompt!r} unknown; use one of {PROMPTS}")
        self.prompt = prompt
        cache_dir = Path(cache_dir)
        if not (cache_dir / "manifest.json").is_file():
            raise FileNotFoundError(
                f"no finished cache at {cache_dir} (manifest.json missing); build one with "
                f"`make precompute DATASET=demo` (writes caches/demo) or set data.cache_dir")
        self.cache = Cache(cache_dir, expect_config_hash=expect_config_hash)
        self.video_root = resolve_video_root(self.cache, video_root)
        self.decode = decode
        self.decoder = decoder or cache_decoder(self.cache.config)
        keys = sorted(self.cache.keys())
        if max_samples is not None:
            keys = keys[:max_samples]
        if not keys:
            raise CacheError(f"cache {cache_dir} holds no questions (all videos failed?); "
                             f"check `videocfr cache info {cache_dir}`")
        check_questions(self.cache, keys)
        if prompt == "letter":
            open_ = [k for k in keys if not self.cache.question(*k).options]
            if open_:
                raise CacheError(f"data.prompt 'letter' asks for option letters, but "
                                 f"{len(open_)} questions have no options (first: {open_[0]}); "
                                 f"use data.prompt 'video-r1' for this cache")
        self.keys: list[tuple[str, str]] = keys

    def __len__(self) -> int:
        return len(self.keys)

    def _prompt(self, question, problem_type: str) -> str:
        if self.prompt == "letter":
            return letter_prompt(question.question, list(question.options))
        return build_prompt(question.question, question.options, problem_type)

    def __getitem__(self, i: int) -> Sample:
        video_id, question_id = self.keys[i]
        video = self.cache.video(video_id)
        question = self.cache.question(video_id, question_id)
        k = video.num_sampled
        if k == 0 or k % 2:
            raise CacheError(f"video {video_id!r}: K = {k} cached frames; Qwen2.5-VL needs K "
                             f"even (two frames per temporal group) — rebuild the cache")
        problem_type = problem_type_of(question.problem_type, question.options)
        frames = read_frames(self.video_root / video.path, video.frame_indices, self.decode,
                             decoder=self.decoder)
        return Sample(video_id=video_id, question_id=question_id,
                      prompt=self._prompt(question, problem_type),
                      answer=question.answer, problem_type=problem_type, frames=frames,
                      frame_indices=video.frame_indices, fps=float(video.fps),
                      num_frames=int(video.num_frames), options=list(question.options))


def check_questions(cache: Cache, keys: list[tuple[str, str]]) -> None:
    """Reject, before training starts, questions the rewards cannot score.

    Reads the answer / problem_type / options columns of every shard at once (no per-question
    reads). A cache written before precompute validated its records may hold such questions.

    Raises:
        CacheError: naming the first bad questions and counting all of them.
    """
    wanted = set(keys)
    bad: list[str] = []
    for i in range(len(cache.shard_paths)):
        q = cache.file(i)["questions"]
        columns = [q[name].asstr()[()] for name in ("video_id", "question_id", "problem_type",
                                                     "answer", "options")]
        for vid, qid, ptype, answer, options in zip(*columns):
            if (vid, qid) not in wanted:
                continue
            problem = question_problem(ptype, json.loads(options), answer)
            if problem is not None:
                bad.append(f"({vid!r}, {qid!r}): {problem}")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CacheError(f"cache {cache.path}: {len(bad)} of {len(keys)} questions cannot be "
                         f"scored: {shown}. Fix the annotation and rebuild the cache (precompute "
                         f"now rejects such records)")


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """int64 [n]: the sample order of one epoch, a pure function of (seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, step: int, seed: int, shuffle: bool,
                  rank: int = 0, world_size: int = 1) -> list[int]:
    """Sample indices of one rank at a step (0-based): each rank takes its own slice.

    Args:
        n: number of samples.
        batch_size: prompts per rank per step.
        step: the step number; a resumed run passes its next step and continues the order.
        seed, shuffle: see epoch_order.
        rank, world_size: data parallel position.

    Returns:
        list[int] of length batch_size (epochs wrap around).
    """
    per_step = batch_size * world_size
    out = []
    for j in range(batch_size):
        flat = step * per_step + rank * batch_size + j
        epoch, pos = divmod(flat, n)
        out.append(int(epoch_order(n, seed, epoch, shuffle)[pos]))
    return out


def process(processor, samples: list[Sample]) -> dict[str, Any]:
    """Prompt tensors for a batch of samples, with the K even / t = K/2 check.

    Args:
        processor: a Qwen2.5-VL processor (padding side left).
        samples: the batch.

    Returns:
        BatchFeature with input_ids / attention_mask int64 [B, P], pixel_values_videos,
        video_grid_thw int64 [B, 3], second_per_grid_ts, mm_token_type_ids int [B, P].
    """
    from transformers.video_utils import VideoMetadata  # noqa: PLC0415

    texts = [processor.apply_chat_template(chat_messages(s.prompt), add_generation_prompt=True,
                                           tokenize=False) for s in samples]
    metadata = [VideoMetadata(total_num_frames=s.num_frames, fps=s.fps,
                              frames_indices=s.frame_indices.tolist()) for s in samples]
    processor.tokenizer.padding_side = "left"
    batch = processor(text=texts, videos=[s.frames for s in samples], video_metadata=metadata,
                      do_sample_frames=False, padding=True, return_tensors="pt")
    for s, thw in zip(samples, batch["video_grid_thw"].tolist()):
        k = s.frames.shape[0]
        if k % 2 or thw[0] != k // 2:
            raise ValueError(f"video {s.video_id!r}: {k} frames gave {thw[0]} temporal groups, "
                             f"expected K/2 = {k / 2}; K must be even and the processor's "
                             f"temporal_patch_size 2 so that prior frame k is model frame k")
    return batch
