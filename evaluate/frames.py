"""Frames of chosen candidates, decoded exactly at their cached frame indices (as the trainer does).

Position k of a strategy's choice is cached frame `video.frame_indices[k]`; decoding by that index
shows the model the very picture the prior and the selector scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from videocfr.cache_format import Cache, VideoRecord


def video_root(cache: Cache, override: str | Path | None = None) -> Path:
    """Where the cache's video paths are relative to (the trainer's rule: override, recorded
    root, else the current directory)."""
    from videocfr.vlm.video import resolve_video_root

    return resolve_video_root(cache, None if override is None else str(override))


def load_frames(root: str | Path, video: VideoRecord, positions: np.ndarray,
                method: str = "auto", decoder: str = "decord", flag: str = "--video-root"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Decode the chosen candidates of one video.

    Args:
        root: the video root (`video_root`).
        video: the cached record (status ok).
        positions: int64 [n] sorted candidate positions (a strategy's output; repeats allowed).
        method: vlm.video.read_frames's decode method.
        decoder: the frame decoder backend: the cache's own, `vlm.decoders.cache_decoder(
            cache.config)` (the callers here pass it).
        flag: how the user of the command in use points at the videos (named when missing).

    Returns:
        (uint8 [n, H, W, 3] frames, float64 [n] timestamps in seconds).

    Raises:
        FileNotFoundError: the video is not under `root`; the message names `flag`.
    """
    from videocfr.vlm.video import read_frames

    if not video.ok:
        raise ValueError(f"video {video.video_id!r} failed in precompute ({video.error}); it has "
                         f"no frames to show")
    positions = np.asarray(positions, np.int64)
    if positions.size == 0 or positions.min() < 0 or positions.max() >= video.num_sampled:
        raise ValueError(f"video {video.video_id!r}: positions {positions.tolist()} must lie in "
                         f"[0, K={video.num_sampled})")
    path = Path(root) / video.path
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found (video {video.video_id!r} of the cache, "
                                f"path {video.path!r} relative to {root}); pass {flag} DIR, the "
                                f"directory the cache's video paths are relative to")
    frames = read_frames(path, video.frame_indices[positions], method, decoder=decoder)
    return frames, np.asarray(video.timestamps, np.float64)[positions]
