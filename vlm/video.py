"""Decode the cached sampled frames of a video, by their stored indices.

The policy must see exactly the frames the prior was computed on: frame k of the model's input is
cached frame k, so prior index k and the model's frame k are the same picture. Indices are frame
numbers in decord's numbering (the decoder precompute used).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from videocfr.cache_format import Cache

log = logging.getLogger(__name__)

# Below this mean gap between wanted frames, one sequential pass beats a seek per frame: a seek
# decodes from the previous keyframe anyway, so dense indices re-decode the same GOP many times.
SEQUENTIAL_MAX_GAP = 16


def read_frames(path: str | Path, indices: np.ndarray, method: str = "auto",
                num_threads: int = 1) -> np.ndarray:
    """Decode the given frames of a video file.

    Args:
        path: the video file.
        indices: int64 [K], ascending frame numbers (decord numbering).
        method: "sequential" (one pass from the first wanted frame, skipping the others),
            "seek" (decord get_batch, a seek per frame) or "auto" (sequential when the wanted
            frames are dense: mean gap <= SEQUENTIAL_MAX_GAP).
        num_threads: decoder threads.

    Returns:
        uint8 [K, H, W, 3] RGB frames in the order of `indices`.
    """
    import decord  # noqa: PLC0415  (optional dependency of the train extra)

    path = Path(path)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"{path}: frame indices must be a non-empty 1-D array, got shape "
                         f"{indices.shape}")
    if np.any(np.diff(indices) < 0):
        raise ValueError(f"{path}: frame indices must be ascending")
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found; set data.video_root to the directory "
                                f"the cache's video paths are relative to")
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
    except decord.DECORDError as err:
        raise RuntimeError(f"decord cannot open {path}: {err}") from err
    n = len(vr)
    if indices[0] < 0 or indices[-1] >= n:
        raise ValueError(f"{path}: cached frame indices reach {int(indices[-1])} but the file has "
                         f"{n} frames; the video changed since precompute (check its content "
                         f"hash) or data.video_root points at other files")
    if method == "auto":
        span = int(indices[-1] - indices[0]) + 1
        method = "sequential" if span <= SEQUENTIAL_MAX_GAP * len(indices) else "seek"
    if method == "seek":
        return vr.get_batch(indices.tolist()).asnumpy()
    if method != "sequential":
        raise ValueError(f"decode method {method!r} unknown; use auto, sequential or seek")
    return _sequential(vr, indices)


def _sequential(vr, indices: np.ndarray) -> np.ndarray:
    """One forward pass: seek once to the first wanted frame, then next()/skip_frames()."""
    vr.seek_accurate(int(indices[0]))
    frames = []
    pos = int(indices[0])
    for idx in indices.tolist():
        if idx > pos:
            vr.skip_frames(idx - pos)
            pos = idx
        if idx < pos:  # a repeated index: reuse the frame just decoded
            frames.append(frames[-1])
            continue
        frames.append(vr.next().asnumpy())
        pos += 1
    return np.stack(frames)


def resolve_video_root(cache: Cache, override: str | None) -> Path:
    """Directory the cache's video paths are relative to.

    Args:
        cache: the opened cache.
        override: data.video_root from the train config (wins when set).

    Returns:
        Path: the override, else the `video_root` the precompute config recorded, else ".".
    """
    if override is not None:
        return Path(override)
    config = cache.config or {}
    for holder in (config, config.get("dataset") or {}, config.get("data") or {}):
        if isinstance(holder, dict) and holder.get("video_root"):
            return Path(holder["video_root"])
    return Path(".")
