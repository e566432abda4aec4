"""Video decoders behind one interface: probe, sequential scan, read at frame indices.

Frame numbers are the decoder's index of the file: frames in presentation order, 0-based (decord
builds it from the packets' timestamps; the PyAV decoder builds the same index by demuxing the
packets, without decoding). A cache records the backend that decoded it (`sampling.decoder` of
its config, "decord" when absent) and readers use that one by default (`cache_decoder`), so the
model is shown the very pixels the prior was computed on.

    dec = get_decoder("pyav")
    info = dec.probe("clip.mp4")                          # VideoInfo(num_frames, fps, w, h)
    frames = dec.read_at("clip.mp4", np.array([0, 5, 9]))  # uint8 [3, H, W, 3] RGB
    for index, frame in dec.scan("clip.mp4", 0, info.num_frames): ...

Precompute's decode pass uses a fourth method, `scan_keep`: one front-to-back pass over a frame
range that hands every frame to a callback (the scene detector) in the backend's cheapest form
and keeps the wanted frames at the decode size. A new backend is one class with these four
methods and one entry of `DECODERS`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

# Below this mean gap between wanted frames, one sequential pass beats a seek per frame: a seek
# decodes from the previous keyframe anyway, so dense indices re-decode the same GOP many times.
SEQUENTIAL_MAX_GAP = 16
READ_METHODS = ("auto", "sequential", "seek")


@dataclass(frozen=True)
class VideoInfo:
    """What a probe tells: frames in the index, average rate, frame size in pixels."""

    num_frames: int
    fps: float
    width: int
    height: int


class DecodeError(RuntimeError):
    """A file that stops decoding part way (truncated or corrupt); the message names the fix."""


class IndexMismatch(Exception):
    """A scan that disagrees with the frame index it was given (the caller falls back)."""


# scan_keep's callback: (frame number, frame) for every frame of the range, in order.
Detect = Callable[[int, np.ndarray], None]


class Decoder(Protocol):
    """The interface every backend implements (see the module docstring)."""

    name: str
    title: str  # the library's own spelling, for messages
    libraries: dict[str, str]  # import name -> distribution, versions a cache records
    # scan_keep hands `detect` RGB frames at the decode size (True) or BGR frames at `small`
    detector_rgb: bool

    def probe(self, path: str | Path) -> VideoInfo: ...

    def scan(self, path: str | Path, lo: int, hi: int, num_threads: int = 1
             ) -> Iterator[tuple[int, np.ndarray]]: ...

    def read_at(self, path: str | Path, indices: np.ndarray, method: str = "auto",
                num_threads: int = 1) -> np.ndarray: ...

    def scan_keep(self, path: str, lo: int, hi: int, wanted: np.ndarray, size: tuple[int, int],
                  detect: Detect, small: tuple[int, int], timestamps: np.ndarray, *,
                  resize: bool = True, num_threads: int = 1, batch_frames: int = 32
                  ) -> np.ndarray:
        """Decode frames [lo, hi) front to back once, keep the wanted ones.

        Args:
            path: the video file.
            lo, hi: the frame range.
            wanted: int64 [k] ascending frame numbers in [lo, hi) to keep.
            size: (width, height) of the kept frames.
            detect: called with every frame of the range, in order (see `detector_rgb`).
            small: (width, height) of the frames `detect` gets when `detector_rgb` is False.
            timestamps: float64 [N] presentation time (s) of every frame: the caller's index.
            resize: False when `size` is the file's own size (decode without scaling).
            num_threads: decoder threads.
            batch_frames: frames decoded per call, where the backend decodes in batches.

        Returns:
            uint8 [k, height, width, 3] RGB, the wanted frames.

        Raises:
            DecodeError: the file stops decoding part way.
            IndexMismatch: the frames decoded disagree with `timestamps`.
        """


def _sequential_wanted(method: str, indices: np.ndarray) -> bool:
    """True when `method` (auto resolved by the gap rule) reads in one sequential pass."""
    if method not in READ_METHODS:
        raise ValueError(f"decode method {method!r} unknown; use auto, sequential or seek")
    if method == "auto":
        span = int(indices[-1] - indices[0]) + 1
        return span <= SEQUENTIAL_MAX_GAP * len(indices)
    return method == "sequential"


def _check_range(path: Path, indices: np.ndarray, n: int) -> None:
    if indices[0] < 0 or indices[-1] >= n:
        raise ValueError(f"{path}: cached frame indices reach {int(indices[-1])} but the file has "
                         f"{n} frames; the video changed since precompute (check its content "
                         f"hash) or data.video_root points at other files")


def _pick(indices: np.ndarray, frames: Iterator[tuple[int, np.ndarray]]) -> np.ndarray:
    """The frames of ascending `indices` (repeats allowed) from a scan in index order."""
    out: list[np.ndarray] = []
    want = indices.tolist()
    j = 0
    for idx, frame in frames:
        while j < len(want) and want[j] == idx:
            out.append(frame)
            j += 1
        if j == len(want):
            break
    if j < len(want):
        raise ValueError(f"the decode ended before frame {want[j]}")
    return np.stack(out)


def _decord_batches(vr, path: str, n: int, batch_frames: int, first: int = 0
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """(start, uint8 [B, H, W, 3]) consecutive batches of frames [first, n), one batch ahead.

    decord releases the GIL while it decodes (ctypes calls), so the caller's work on batch i
    (the scene detector) runs while batch i+1 is decoded.
    """
    import decord  # noqa: PLC0415

    out: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        for start in range(first, n, batch_frames):
            end = min(n, start + batch_frames)
            try:
                item = (start, vr.get_batch(list(range(start, end))).asnumpy())
            except Exception as err:  # handed to the consumer thread, which raises it
                item = (start, err)
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if stop.is_set() or isinstance(item[1], Exception):
                return

    reader = threading.Thread(target=read, name="videocfr-decode-reader", daemon=True)
    reader.start()
    try:
        for _ in range(first, n, batch_frames):
            start, batch = out.get()
            if isinstance(batch, decord.DECORDError):
                lines = [ln for ln in str(batch).strip().splitlines() if ln.strip()]
                last = min(n, start + batch_frames) - 1
                raise DecodeError(
                    f"{path}: decoding failed at frames {start}-{last} (truncated or "
                    f"corrupt file): "
                    f"{lines[0][:200] if lines else 'DECORDError'}. Re-download or re-encode it")
            if isinstance(batch, Exception):
                raise batch
            yield start, batch
    finally:
        stop.set()
        reader.join()


class DecordDecoder:
    """decord's VideoReader (CPU)."""

    name = "decord"
    title = "decord"
    libraries = {"decord": "decord"}
    detector_rgb = True  # decord converts every frame to RGB at the decode size anyway

    def _open(self, path: Path, num_threads: int):
        import decord  # noqa: PLC0415  (optional dependency)

        try:
            return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
        except decord.DECORDError as err:
            raise RuntimeError(f"decord cannot open {path}: {err}") from err

    def probe(self, path: str | Path) -> VideoInfo:
        vr = self._open(Path(path), 1)
        h, w = vr[0].shape[:2]
        return VideoInfo(len(vr), float(vr.get_avg_fps()), int(w), int(h))

    def scan(self, path: str | Path, lo: int, hi: int, num_threads: int = 1
             ) -> Iterator[tuple[int, np.ndarray]]:
        vr = self._open(Path(path), num_threads)
        vr.seek_accurate(int(lo))
        for idx in range(int(lo), min(int(hi), len(vr))):
            yield idx, vr.next().asnumpy()

    def read_at(self, path: str | Path, indices: np.ndarray, method: str = "auto",
                num_threads: int = 1) -> np.ndarray:
        path = Path(path)
        vr = self._open(path, num_threads)
        _check_range(path, indices, len(vr))
        if not _sequential_wanted(method, indices):
            return vr.get_batch(indices.tolist()).asnumpy()
        vr.seek_accurate(int(indices[0]))
        frames: list[np.ndarray] = []
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

    def scan_keep(self, path: str, lo: int, hi: int, wanted: np.ndarray, size: tuple[int, int],
                  detect: Detect, small: tuple[int, int], timestamps: np.ndarray, *,
                  resize: bool = True, num_threads: int = 1, batch_frames: int = 32
                  ) -> np.ndarray:
        """`Decoder.scan_keep`: consecutive `get_batch` calls, already scaled inside decord (the
        RGB conversion and copy of a small frame are far cheaper than of a 720p one)."""
        import decord  # noqa: PLC0415

        width, height = size
        try:
            vr = (decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height,
                                     num_threads=num_threads) if resize else
                  decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads))
        except (decord.DECORDError, RuntimeError, AssertionError) as err:
            raise DecodeError(f"{path}: decord cannot open it again to decode ({err}); "
                              f"re-download or re-encode it") from None
        frames = np.empty((len(wanted), height, width, 3), np.uint8)
        kept = 0  # next of `wanted` to fill
        for first_frame, batch in _decord_batches(vr, path, hi, batch_frames, first=lo):
            if batch.shape[1:] != (height, width, 3):
                raise DecodeError(f"{path}: frame size changed mid-stream to {batch.shape[1:]};"
                                  f" re-encode it to one resolution")
            end = first_frame + len(batch)
            for i, frame in enumerate(batch):
                detect(first_frame + i, frame)
            while kept < len(wanted) and wanted[kept] < end:
                frames[kept] = batch[wanted[kept] - first_frame]
                kept += 1
        assert kept == len(wanted), (kept, len(wanted))
        return frames


def indexed_frames(frames: Iterable, ts: np.ndarray, lo: int, time_base: float, gap: float,
                   error: Callable[[str], Exception]) -> Iterator[tuple[int, object]]:
    """Number PyAV frames by the frame index, from frame `lo` on, checking every step.

    Args:
        frames: PyAV `VideoFrame`s in decode order (a seek may start before `lo`).
        ts: float64 [N] presentation time (s) of every frame: the index.
        lo: the first frame number to yield; earlier ones (from the key frame) are skipped.
        time_base: the stream's time base (s per pts unit).
        gap: the index's typical frame gap (s); a frame must lie within gap / 4 of its entry.
        error: builds the exception raised when the decode disagrees with the index.

    Yields:
        (frame number, VideoFrame), frame numbers lo, lo + 1, ... without a gap.
    """
    expected = lo
    for frame in frames:
        if frame.pts is None:
            raise error(f"a frame without a timestamp near frame {expected}")
        t = frame.pts * time_base
        idx = int(np.searchsorted(ts, t - gap / 2))
        if idx >= ts.size or abs(ts[idx] - t) > gap / 4:
            raise error(f"a frame at {t:.4f} s matches no indexed frame")
        if idx < lo:
            continue  # decoded from the key frame before the wanted range
        if idx != expected:
            raise error(f"expected frame {expected}, decoded frame {idx}")
        yield idx, frame
        expected += 1


class PyAVDecoder:
    """PyAV (FFmpeg's libraries), frames converted to RGB at their own size."""

    name = "pyav"
    title = "PyAV"
    libraries = {"av": "av"}
    # scan_keep converts each frame once, straight to the detector's small BGR size (swscale,
    # fast bilinear), and only the kept frames to the decode size in RGB (bicubic)
    detector_rgb = False

    def index(self, path: str | Path) -> tuple[np.ndarray, float]:
        """(float64 [N] presentation times in s of the frames, sorted; average fps), from the
        packets alone (nothing is decoded)."""
        import av  # noqa: PLC0415

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            tb = float(stream.time_base)
            pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size]
            fps = float(stream.average_rate or 0) or float(stream.guessed_rate or 0)
        return np.sort(np.asarray(pts, np.float64)) * tb, fps

    def probe(self, path: str | Path) -> VideoInfo:
        import av  # noqa: PLC0415

        ts, fps = self.index(path)
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            width, height = int(ctx.width), int(ctx.height)
        return VideoInfo(int(ts.size), fps, width, height)

    def _scan(self, path: Path, lo: int, hi: int, ts: np.ndarray, num_threads: int
              ) -> Iterator[tuple[int, np.ndarray]]:
        import av  # noqa: PLC0415

        gap = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = num_threads
            tb = float(stream.time_base)
            if lo > 0:
                container.seek(int(round(ts[lo] / tb)), stream=stream, backward=True,
                               any_frame=False)
            def error(msg: str) -> ValueError:
                return ValueError(f"{path}: {msg}")

            for idx, frame in indexed_frames(container.decode(stream), ts, lo, tb, gap, error):
                yield idx, frame.to_ndarray(format="rgb24")
                if idx + 1 >= hi:
                    return

    def scan(self, path: str | Path, lo: int, hi: int, num_threads: int = 1
             ) -> Iterator[tuple[int, np.ndarray]]:
        ts, _ = self.index(path)
        yield from self._scan(Path(path), int(lo), min(int(hi), ts.size), ts, num_threads)

    def read_at(self, path: str | Path, indices: np.ndarray, method: str = "auto",
                num_threads: int = 1) -> np.ndarray:
        path = Path(path)
        ts, _ = self.index(path)
        _check_range(path, indices, ts.size)
        if _sequential_wanted(method, indices):
            lo, hi = int(indices[0]), int(indices[-1]) + 1
            return _pick(indices, self._scan(path, lo, hi, ts, num_threads))
        out: list[np.ndarray] = []
        for i, idx in enumerate(indices.tolist()):  # a seek per wanted frame (sparse indices)
            if i and idx == indices[i - 1]:
                out.append(out[-1])
                continue
            out.append(_pick(np.array([idx]), self._scan(path, idx, idx + 1, ts, num_threads))[0])
        return np.stack(out)


    def scan_keep(self, path: str, lo: int, hi: int, wanted: np.ndarray, size: tuple[int, int],
                  detect: Detect, small: tuple[int, int], timestamps: np.ndarray, *,
                  resize: bool = True, num_threads: int = 1, batch_frames: int = 32
                  ) -> np.ndarray:
        """`Decoder.scan_keep` with threaded PyAV (thread_type AUTO), every decoded frame
        matched to `timestamps` by its presentation time: any disagreement (a frame the index
        does not know, a gap, a repeat, a decode error, an early end) raises IndexMismatch."""
        import av  # noqa: PLC0415
        from av.video.reformatter import VideoReformatter  # noqa: PLC0415

        width, height = size
        ts = np.asarray(timestamps, np.float64)
        gap = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0
        out = np.empty((len(wanted), height, width, 3), np.uint8)
        small_rf, big_rf = VideoReformatter(), VideoReformatter()
        expected, kept = lo, 0
        try:
            with av.open(path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                stream.thread_count = num_threads
                tb = float(stream.time_base)
                if lo > 0:
                    container.seek(int(round(ts[lo] / tb)), stream=stream, backward=True,
                                   any_frame=False)
                for idx, frame in indexed_frames(container.decode(stream), ts, lo, tb, gap,
                                                 IndexMismatch):
                    detect(idx, small_rf.reformat(frame, small[0], small[1], "bgr24",
                                                  interpolation="FAST_BILINEAR").to_ndarray())
                    while kept < len(wanted) and wanted[kept] == idx:
                        out[kept] = big_rf.reformat(frame, width, height, "rgb24",
                                                    interpolation="BICUBIC").to_ndarray()
                        kept += 1
                    expected += 1
                    if expected >= hi:
                        break
        except av.error.FFmpegError as err:
            raise IndexMismatch(f"PyAV failed near frame {expected}: {err}") from None
        if expected < hi or kept < len(wanted):
            raise IndexMismatch(f"the stream ended at frame {expected}, the index has {hi}")
        return out


DECODERS: dict[str, type] = {"decord": DecordDecoder, "pyav": PyAVDecoder}


def get_decoder(name: str) -> Decoder:
    """The backend called `name` (one of DECODERS)."""
    if name not in DECODERS:
        raise ValueError(f"decoder {name!r} unknown; use one of {sorted(DECODERS)}")
    return DECODERS[name]()


def cache_decoder(config: dict | None) -> str:
    """The backend that decoded a cache's frames: its config's sampling.decoder ("decord", the
    default, is recorded only when set)."""
    sampling = (config or {}).get("sampling") or {}
    name = sampling.get("decoder", "decord") if isinstance(sampling, dict) else "decord"
    if name not in DECODERS:
        raise ValueError(f"the cache says its frames were decoded by {name!r}, which this "
                         f"release cannot read; use one of {sorted(DECODERS)}")
    return name
