"""Synthetic cache records for tests of cache_format and of the stages that read caches.

Records are random but valid (deterministic per seed); no video or model is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from videocfr.cache_format import (
    FusionConfig,
    QuestionRecord,
    ShardWriter,
    VideoRecord,
    finalize_cache,
    fuse,
)

TEST_CONFIG = {"sampling": {"num_frames": 8}, "clip": {"model": "synthetic", "pretrained": "none"},
               "fusion": {"preset": "cfr"}}
TEST_MODEL = {"name": "synthetic", "pretrained": "random"}


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_video(video_id: str, k: int = 8, dim: int = 16, seed: int = 0,
               num_scenes: int = 2, num_frames: int = 250, fps: float = 25.0,
               path: str | None = None) -> VideoRecord:
    """An ok video of `k` sampled frames in `num_scenes` scenes of a `num_frames` clip."""
    rng = np.random.default_rng(seed)
    n = num_frames
    idx = np.linspace(0, n - 1, k).round().astype(np.int64)
    cuts = np.linspace(0, n, num_scenes + 1).round().astype(np.int64)
    scenes = np.stack([cuts[:-1], cuts[1:]], axis=1)
    frame_scene = (np.searchsorted(cuts, idx, side="right") - 1).astype(np.int32)
    rep = np.zeros(k, bool)
    for j in np.unique(frame_scene):
        rep[np.flatnonzero(frame_scene == j)[0]] = True
    return VideoRecord(video_id=video_id, path=path or f"videos/{video_id}.mp4",
                       content_hash=f"{seed:064x}", fps=fps, duration=n / fps, num_frames=n,
                       frame_indices=idx, timestamps=idx / fps, scenes=scenes,
                       frame_scene=frame_scene, scene_rep=rep,
                       embeddings=_unit(rng, k, dim).astype(np.float16))


def make_question(video: VideoRecord, question_id: str, seed: int = 0,
                  preset: str = "cfr") -> QuestionRecord:
    """A question with random saliences in [0, 1] and their fused prior."""
    rng = np.random.default_rng(seed)
    k = video.num_sampled
    uniform = np.ones(k, np.float32)
    scene = np.where(video.scene_rep, 1.0, rng.uniform(0.1, 0.9, k)).astype(np.float32)
    raw = rng.uniform(-0.2, 0.4, k).astype(np.float32)
    semantic = ((raw - raw.min()) / (raw.max() - raw.min())).astype(np.float32)
    prior = fuse(uniform, scene, semantic, raw, video.scene_rep, FusionConfig(preset=preset))
    dim = video.embeddings.shape[1]
    return QuestionRecord(video_id=video.video_id, question_id=question_id,
                          question=f"What happens in {video.video_id}? ({question_id})",
                          options=["A. a cat", "B. a dog", "C. a car", "D. nothing"],
                          answer="B", problem_type="multiple choice",
                          text_embedding=_unit(rng, dim).astype(np.float16), uniform=uniform,
                          scene=scene, semantic=semantic, semantic_raw=raw, prior=prior)


def make_cache(path: str | Path, n_videos: int = 4, n_questions: int = 2, k: int = 8,
               dim: int = 16, n_failed: int = 1, config: dict | None = None,
               max_videos: int = 1000, prefix: str = "vid", seed: int = 0,
               video_root: str | None = None) -> dict:
    """Write and finalize a synthetic cache; returns its manifest."""
    config = TEST_CONFIG if config is None else config
    with ShardWriter(path, config, embed_dim=dim, model=TEST_MODEL,
                     max_videos=max_videos, video_root=video_root) as writer:
        for i in range(n_videos):
            v = make_video(f"{prefix}{i:03d}", k=k, dim=dim, seed=seed + i)
            qs = [make_question(v, f"q{j}", seed=seed * 1000 + i * 100 + j)
                  for j in range(n_questions)]
            writer.add(v, qs)
        for i in range(n_failed):
            writer.add(VideoRecord.failed(f"bad{i:03d}", f"videos/bad{i}.mp4",
                                          "decode failed: moov atom not found"),
                       [], skipped_questions=1)
    return finalize_cache(path)


def resign_values(shard: str | Path) -> None:
    """Recompute a shard's `values_sha256` after an edit, as the sender of a hostile cache
    would (the digest is no secret). A shard whose structure is refused is left as it is: the
    structural check refuses it before any digest is compared."""
    import h5py
    from videocfr.cache_format.digest import DIGEST_ATTR, values_sha256
    from videocfr.cache_format.schema import CacheError
    from videocfr.cache_format.structure import check_shard, shard_attrs

    with h5py.File(shard, "a") as f:
        try:
            check_shard(f, config_hash=None, embed_dim=None, where=str(shard))
            digest = values_sha256(f, shard_attrs(f, str(shard)))
        except (CacheError, KeyError, TypeError, ValueError, OSError):
            return
        f.attrs[DIGEST_ATTR] = digest
