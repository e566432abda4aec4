"""One sequential decode pass per video: K uniformly sampled frames and the scenes (METHOD §1).

Why one pass: `VideoReader.get_batch` on sparse indices seeks, and every seek re-decodes a whole
GOP from the previous key frame; K seeks plus `scenedetect.detect` (another full decode) cost
several decodes of the file. Here the file is decoded ONCE, front to back, by the backend of
`sampling.decoder` through the decoder interface (vlm.decoders, `Decoder.scan_keep`): decord in
consecutive batches already scaled down inside decord, or threaded PyAV converting each frame
straight to the detector's small size. Every frame goes to the scene detector
(precompute/scenes.py); the K sampled frames are kept.

The file is probed and indexed by decord whatever the backend (frame count, rate, timestamps,
the checks below); a part whose PyAV frames disagree with that index (`IndexMismatch`) is
decoded by decord instead, so a backend never changes which frame is which.

Long videos are decoded in P parts at once (P decode processes, see worker.py): part j decodes
the frames [start_j, stop_j) front to back, beginning `WARMUP_FRAMES` earlier so its scene
detector's window and `min_scene_len` state are the same as a single pass would have at
start_j, and reports only the cuts inside its own range. Every frame is still decoded once (plus
the warm-up and one seek per part); `merge_parts` joins the parts into one DecodedVideo.

Sampling rule (METHOD §1, "uniform in time over the decodable duration"): with N decodable
frames at `fps`, the duration is N / fps; it is cut into K equal segments and the frame at the
centre of each segment is taken:

    frame_indices[k] = floor((k + 0.5) * N / K),   timestamps[k] = frame_indices[k] / fps

Indices are ascending and unique when N >= K, and consecutive ones differ by floor(N/K) or
ceil(N/K) frames (constant spacing within one frame). K is `num_frames`, or with `fps` set
min(floor(duration * fps), max_frames) rounded down to even; a video with fewer than K frames
gets K = N rounded down to even (never repeated frames); a video with fewer than 2 frames fails.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
from videocfr.vlm.decoders import DECODERS as DECODER_BACKENDS
from videocfr.vlm.decoders import DecodeError, Decoder, IndexMismatch, get_decoder

from .scenes import SceneConfig, SceneTracker, cuts_to_scenes

logger = logging.getLogger(__name__)

# A frame interval this far (relative) from the median interval marks the file as variable rate.
VFR_TOLERANCE = 0.25
BATCH_FRAMES = 32
DECODERS = tuple(DECODER_BACKENDS)  # the backends of vlm.decoders
# Parts: a video is split only when each part gets at least this many frames (a minute at 25
# fps), and part j > 0 starts decoding at least this many frames before its range (the detector
# warm-up: AdaptiveDetector's window plus twice min_scene_len, 15 frames by default).
MIN_PART_FRAMES = 1500
WARMUP_FRAMES = 64
TAIL_FRAMES = 16  # decoded past a part's end so cuts near it leave the detector's window


class VideoDecodeError(Exception):
    """A video that cannot be decoded; the message says why and, where possible, how to fix it.

    Such a video becomes a failed record in the cache; it never stops a shard.
    """

    def __reduce__(self):  # picklable across the worker process boundary
        return (type(self), (str(self),))


@dataclass
class SamplingConfig:
    """Which frames are sampled and at what size they are decoded.

    Args:
        num_frames: K, frames sampled per video (even: Qwen2.5-VL merges frame pairs).
            Used when `fps` is None.
        fps: sample this many frames per second of video instead; K = min(floor(duration * fps),
            max_frames) rounded down to even (at least 2).
        max_frames: upper bound on K when sampling by `fps` (even).
        short_side: decode so the shorter side has this many pixels, keeping the aspect ratio,
            both sides even (CLIP resizes to 224 anyway; never upscaled). None decodes at the
            file's own size.
        decoder: library of the sequential scan: "decord" (default) or "pyav" (threaded PyAV,
            vlm.decoders.PyAVDecoder.scan_keep: faster on 720p H.264, same frames and cuts, the
            sampled frames' pixels differ from decord's by a few grey levels). The file is
            indexed by decord either way; train/eval read frames with the backend the cache
            records (vlm.decoders.cache_decoder).
    """

    num_frames: int = 32
    fps: float | None = None
    max_frames: int = 256
    short_side: int | None = 224
    decoder: str = "decord"

    def __post_init__(self):
        if not isinstance(self.num_frames, int) or self.num_frames < 2 or self.num_frames % 2:
            raise ValueError(f"sampling.num_frames must be an even int >= 2 (Qwen2.5-VL pairs "
                             f"frames), got {self.num_frames!r}; e.g. 32")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ValueError(f"sampling.fps must be a number > 0 or null (use num_frames), "
                             f"got {self.fps!r}")
        if not isinstance(self.max_frames, int) or self.max_frames < 2 or self.max_frames % 2:
            raise ValueError(f"sampling.max_frames must be an even int >= 2, "
                             f"got {self.max_frames!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"sampling.decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.short_side is not None and (not isinstance(self.short_side, int)
                                            or self.short_side < 16 or self.short_side % 2):
            raise ValueError(f"sampling.short_side must be an even int >= 16 or null (native "
                             f"size), got {self.short_side!r}; e.g. 224")

    def num_samples(self, num_frames: int, fps: float) -> int:
        """K for a video of `num_frames` decodable frames at `fps`.

        Returns:
            even K with 2 <= K <= num_frames (num_frames >= 2 is the caller's check).
        """
        if self.fps is None:
            k = self.num_frames
        else:
            k = min(math.floor(num_frames / fps * self.fps), self.max_frames)
        k = min(k, num_frames)
        return max(2, k - k % 2)


def sample_indices(num_frames: int, k: int) -> np.ndarray:
    """Centres of K equal segments of [0, num_frames): int64 [K], ascending, unique if N >= K."""
    return np.floor((np.arange(k) + 0.5) * num_frames / k).astype(np.int64)


def decode_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) to decode at: short side = `short_side`, aspect kept, both even.

    A video already smaller than `short_side` keeps its size (rounded down to even).
    """
    if short_side is None or min(width, height) <= short_side:
        scale = 1.0
    else:
        scale = short_side / min(width, height)
    def even(x: float) -> int:
        return max(2, int(round(x / 2.0)) * 2)
    if scale == 1.0:
        return max(2, width - width % 2), max(2, height - height % 2)
    if width <= height:
        return short_side, even(height * scale)
    return even(width * scale), short_side


@dataclass
class DecodedVideo:
    """The result of one decode pass.

    Args:
        fps: average frame rate reported by the container.
        num_frames: N, decodable frames.
        duration: N / fps, seconds.
        frame_indices: int64 [K], sampled frames, ascending.
        timestamps: float64 [K], seconds of the sampled frames (frame_indices / fps).
        frames: uint8 [K, H, W, 3] RGB, the sampled frames at the decode size.
        scenes: int64 [S, 2], [start_frame, end_frame) covering [0, N).
    """

    fps: float
    num_frames: int
    duration: float
    frame_indices: np.ndarray
    timestamps: np.ndarray
    frames: np.ndarray
    scenes: np.ndarray


def default_threads() -> int:
    """Decoder threads: at most 2 (the decode overlaps the CLIP pass of the main process)."""
    return max(1, min(2, os.cpu_count() or 1))


def _container(path: str) -> str | None:
    """Name of the container the file's first bytes announce, or None when none is recognised."""
    with open(path, "rb") as f:
        head = f.read(189)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4/MOV"
    signatures = {b"\x1aE\xdf\xa3": "Matroska/WebM", b"RIFF": "AVI", b"FLV": "FLV",
                  b"\x00\x00\x01\xba": "MPEG-PS", b"OggS": "Ogg"}
    for magic, name in signatures.items():
        if head.startswith(magic):
            return name
    if len(head) == 189 and head[0] == head[188] == 0x47:
        return "MPEG-TS"
    return None


def _open(path: str, width: int = -1, height: int = -1, num_threads: int = 0):
    import decord

    try:
        return decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height,
                                  num_threads=num_threads)
    except (decord.DECORDError, RuntimeError, AssertionError) as err:
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        detail = lines[0][:300] if lines else type(err).__name__
        if "video stream" in str(err).lower():
            raise VideoDecodeError(
                f"{path}: no video stream (an audio-only file?); decord said: {detail}. Remove "
                f"it from the dataset or point the record at the video file") from None
        container = _container(path)
        if container is None:
            raise VideoDecodeError(
                f"{path}: not a video file (no known container signature in its first bytes); "
                f"decord said: {detail}. Point the record at the video file") from None
        raise VideoDecodeError(
            f"{path}: a truncated or corrupt {container} file (it cannot be opened; e.g. an "
            f"incomplete download missing its index); decord said: {detail}. Re-download or "
            f"re-encode it") from None


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(f"{path}: file not found; check the dataset's video root / path")
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes); re-download or re-encode it")


def _check_constant_rate(path: str, vr, fps: float) -> np.ndarray:
    """Raise VideoDecodeError when the frame timestamps are not evenly spaced.

    Returns:
        float64 [N] presentation time (s) of every frame, in frame order.
    """
    n = len(vr)
    starts = np.sort(np.asarray(vr.get_frame_timestamp(np.arange(n)), np.float64)[:, 0])
    gaps = np.diff(starts)
    if gaps.size == 0:
        return starts
    median = float(np.median(gaps))
    nominal = 1.0 / fps if fps > 0 else median
    if median <= 0:
        raise VideoDecodeError(f"{path}: frame timestamps do not increase (broken timing); "
                               f"re-encode it: ffmpeg -i in.mp4 -vf fps={fps:g} out.mp4")
    off = np.abs(gaps - median) > VFR_TOLERANCE * median
    if off.any() or abs(median - nominal) > VFR_TOLERANCE * nominal:
        raise VideoDecodeError(
            f"{path}: variable frame rate ({int(off.sum())} of {gaps.size} frame intervals differ "
            f"from the median {median * 1000:.1f} ms by > {VFR_TOLERANCE:.0%}; container says "
            f"{fps:.3f} fps): sampled timestamps would be wrong. Re-encode to a constant frame "
            f"rate: ffmpeg -i in.mp4 -vf fps={round(fps) or 25} -c:v libx264 out.mp4")
    return starts


def detector_size(width: int, height: int, downscale_width: int) -> tuple[int, int]:
    """(width, height) the scene detector sees for frames decoded at (width, height)."""
    if downscale_width and width > downscale_width:
        return downscale_width, max(1, round(height * downscale_width / width))
    return width, height


def scan_range(decoder: Decoder, path: str, lo: int, hi: int, wanted: np.ndarray,
               width: int, height: int, scenes_cfg: SceneConfig, fps: float, threads: int,
               timestamps: np.ndarray, *, resize: bool = True, batch_frames: int = BATCH_FRAMES
               ) -> tuple[np.ndarray, list[int]]:
    """Decode frames [lo, hi) front to back with `decoder`, feed the scene detector, keep the
    wanted frames (`Decoder.scan_keep`).

    Returns:
        (uint8 [k, height, width, 3] RGB kept frames, cut frame numbers found in [lo, hi)).

    Raises:
        VideoDecodeError: the file stops decoding part way.
        IndexMismatch: the decode disagrees with `timestamps` (PyAV; the caller falls back).
    """
    tracker = SceneTracker(scenes_cfg, fps=fps, rgb=decoder.detector_rgb)
    small = detector_size(width, height, scenes_cfg.downscale_width)
    try:
        frames = decoder.scan_keep(path, lo, hi, wanted, (width, height), tracker.update, small,
                                   timestamps, resize=resize, num_threads=threads,
                                   batch_frames=batch_frames)
    except DecodeError as err:
        raise VideoDecodeError(str(err)) from None
    return frames, tracker.cuts()


def part_bounds(num_frames: int, num_parts: int,
                min_part_frames: int = MIN_PART_FRAMES) -> list[tuple[int, int]]:
    """[start, stop) of each part: at most `num_parts`, each of >= `min_part_frames` frames."""
    parts = max(1, min(num_parts, num_frames // max(1, min_part_frames)))
    edges = np.linspace(0, num_frames, parts + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


@dataclass
class DecodedPart:
    """What one part of a video's decode pass found (see `merge_parts`).

    Args:
        fps, num_frames, frame_indices: of the whole video (every part computes the same).
        rows: int64 [k] rows of `frame_indices` that fall in this part.
        frames: uint8 [k, H, W, 3] those frames.
        cuts: cut frames (new scene starts) inside this part's range.
        empty: True when the video is too short to have this part (num_parts > parts used).
    """

    fps: float
    num_frames: int
    frame_indices: np.ndarray
    rows: np.ndarray
    frames: np.ndarray
    cuts: list[int]
    empty: bool = False


def decode_part(path: str | os.PathLike, sampling: SamplingConfig | None = None,
                scenes_cfg: SceneConfig | None = None, part: int = 0, num_parts: int = 1, *,
                num_threads: int | None = None, batch_frames: int = BATCH_FRAMES,
                min_part_frames: int = MIN_PART_FRAMES) -> DecodedPart:
    """Decode part `part` of `num_parts` of a video in one sequential pass.

    The video is probed first (size, count, rate, the checks of `decode_video`); it is split by
    `part_bounds`, so a short video has fewer parts than asked and the others come back empty.

    Raises:
        VideoDecodeError: as `decode_video`.
    """
    sampling = sampling or SamplingConfig()
    scenes_cfg = scenes_cfg or SceneConfig()
    if not 0 <= part < num_parts:
        raise ValueError(f"part {part} must be in [0, num_parts={num_parts})")
    path = os.fspath(path)
    threads = default_threads() if num_threads is None else num_threads
    _check_file(path)
    import decord

    # Probe at native size (one frame) for the size, count and timing; the real pass follows.
    # The first frame is read at once: decord decodes ahead in a thread, and a file damaged
    # further in would otherwise report its damage here, as if the first frame were bad.
    probe = _open(path, num_threads=1)
    try:
        first = probe.next().shape  # (H, W, 3)
    except (decord.DECORDError, StopIteration):
        probe = _open(path, num_threads=1)  # once more on a fresh reader before blaming frame 0
        try:
            first = probe.next().shape
        except (decord.DECORDError, StopIteration) as err:
            raise VideoDecodeError(f"{path}: the first frame cannot be decoded ({err}); the "
                                   f"file is corrupt, re-download or re-encode it") from None
    n = len(probe)
    fps = float(probe.get_avg_fps())
    if n < 2:
        raise VideoDecodeError(f"{path}: only {n} frame; at least 2 are needed for K >= 2 "
                               f"sampled frames. Remove it from the dataset")
    if not (fps > 0 and math.isfinite(fps)):
        raise VideoDecodeError(f"{path}: the container reports no frame rate ({fps}); re-encode "
                               f"it: ffmpeg -i in.mp4 -vf fps=25 out.mp4")
    timestamps = _check_constant_rate(path, probe, fps)
    del probe
    k = sampling.num_samples(n, fps)
    indices = sample_indices(n, k)
    bounds = part_bounds(n, num_parts, min_part_frames)
    if part >= len(bounds):
        return DecodedPart(fps=fps, num_frames=n, frame_indices=indices,
                           rows=np.zeros(0, np.int64), frames=np.zeros((0, 0, 0, 3), np.uint8),
                           cuts=[], empty=True)
    start, stop = bounds[part]
    warmup = max(WARMUP_FRAMES, 2 * scenes_cfg.min_scene_len + 32)  # detector state settles
    lo = max(0, start - warmup) if part else 0
    hi = min(n, stop + TAIL_FRAMES) if part < len(bounds) - 1 else n
    width, height = decode_size(first[1], first[0], sampling.short_side)
    rows = np.flatnonzero((indices >= start) & (indices < stop))
    decoder = get_decoder(sampling.decoder)
    args = (path, lo, hi, indices[rows], width, height, scenes_cfg, fps, threads, timestamps)
    resize = (width, height) != (first[1], first[0])
    try:
        frames, found = scan_range(decoder, *args, resize=resize, batch_frames=batch_frames)
    except IndexMismatch as err:  # only a backend that is not the index's (decord) disagrees
        logger.warning("%s: the %s scan of frames %d-%d disagrees with the index (%s); "
                       "decoding them with decord", path, decoder.title, lo, hi - 1, err)
        frames, found = scan_range(get_decoder("decord"), *args, resize=resize,
                                   batch_frames=batch_frames)
    cuts = [c for c in found if start <= c < stop]
    return DecodedPart(fps=fps, num_frames=n, frame_indices=indices, rows=rows, frames=frames,
                       cuts=cuts)


def merge_parts(parts: list[DecodedPart]) -> DecodedVideo:
    """Join the parts of one video, in part order, into its DecodedVideo."""
    live = [p for p in parts if not p.empty]
    if not live:
        raise ValueError("merge_parts needs at least one non-empty part")
    head = live[0]
    rows = np.concatenate([p.rows for p in live])
    if not np.array_equal(rows, np.arange(head.frame_indices.shape[0])):
        raise ValueError(f"the parts cover sampled rows {rows.tolist()}, not each of the "
                         f"{head.frame_indices.shape[0]} once and in order")
    n, fps, indices = head.num_frames, head.fps, head.frame_indices
    frames = live[0].frames if len(live) == 1 else np.concatenate([p.frames for p in live])
    scenes = cuts_to_scenes([c for p in live for c in p.cuts], n)
    return DecodedVideo(fps=fps, num_frames=n, duration=n / fps, frame_indices=indices,
                        timestamps=indices / fps, frames=frames, scenes=scenes)


def decode_video(path: str | os.PathLike, sampling: SamplingConfig | None = None,
                 scenes_cfg: SceneConfig | None = None, *, num_threads: int | None = None,
                 batch_frames: int = BATCH_FRAMES, num_parts: int = 1,
                 min_part_frames: int = MIN_PART_FRAMES) -> DecodedVideo:
    """Decode a video once: sample K frames uniformly in time and detect its scenes.

    Args:
        path: video file.
        sampling: frame sampling and decode size (defaults: K = 32, short side 224).
        scenes_cfg: scene detector (default: AdaptiveDetector).
        num_threads: decoder threads (default `default_threads()`).
        batch_frames: consecutive frames decoded per decord call.
        num_parts, min_part_frames: decode in parts one after the other (the worker pool runs
            them at once); the result is the same as one pass.

    Returns:
        DecodedVideo with K sampled frames uint8 [K, H, W, 3] and scenes int64 [S, 2].

    Raises:
        VideoDecodeError: missing, empty, not a video / no video stream, truncated or corrupt,
            fewer than 2 frames, or variable frame rate; the message says how to fix it.
    """
    return merge_parts([
        decode_part(path, sampling, scenes_cfg, j, num_parts, num_threads=num_threads,
                    batch_frames=batch_frames, min_part_frames=min_part_frames)
        for j in range(num_parts)])
