"""Decode the cached sampled frames of a video, by their stored indices.

The policy must see exactly the frames the prior was computed on: frame k of the model's input is
cached frame k, so prior index k and the model's frame k are the same picture. Indices are frame
numbers of the decoder's index; the backend is the one the cache recorded (vlm.decoders).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from videocfr.cache_format import Cache

from .decoders import READ_METHODS, get_decoder

log = logging.getLogger(__name__)


def read_frames(path: str | Path, indices: np.ndarray, method: str = "auto",
                num_threads: int = 1, decoder: str = "decord") -> np.ndarray:
    """Decode the given frames of a video file.

    Args:
        path: the video file.
        indices: int64 [K], ascending frame numbers (the decoder's index of the file).
        method: "sequential" (one pass from the first wanted frame, skipping the others),
            "seek" (a seek per frame) or "auto" (sequential when the wanted frames are dense:
            mean gap <= vlm.decoders.SEQUENTIAL_MAX_GAP).
        num_threads: decoder threads.
        decoder: the backend (vlm.decoders.DECODERS); a cache's own is `cache_decoder(config)`.

    Returns:
        uint8 [K, H, W, 3] RGB frames in the order of `indices`.
    """
    path = Path(path)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"{path}: frame indices must be a non-empty 1-D array, got shape "
                         f"{indices.shape}")
    if np.any(np.diff(indices) < 0):
        raise ValueError(f"{path}: frame indices must be ascending")
    if method not in READ_METHODS:
        raise ValueError(f"decode method {method!r} unknown; use auto, sequential or seek")
    backend = get_decoder(decoder)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found; set data.video_root to the directory "
                                f"the cache's video paths are relative to")
    return backend.read_at(path, indices, method, num_threads)


def resolve_video_root(cache: Cache, override: str | None) -> Path:
    """Directory the cache's video paths are relative to.

    Args:
        cache: the opened cache.
        override: data.video_root from the train config (wins when set).

    Returns:
        Path: the override, else where precompute found the videos (the manifest's
        `video_root`), else a `video_root` the precompute config recorded, else ".".
    """
    if override is not None:
        return Path(override)
    if getattr(cache, "video_root", None):
        return Path(cache.video_root)
    config = cache.config or {}
    for holder in (config, config.get("dataset") or {}, config.get("data") or {}):
        if isinstance(holder, dict) and holder.get("video_root"):
            return Path(holder["video_root"])
    return Path(".")
