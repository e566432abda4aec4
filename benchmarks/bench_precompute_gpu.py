"""Precompute on a GPU: the scoring stage against the raw image tower, saliences, end to end.

On a CUDA device (random weights, no download) it measures:

* scoring stage vs raw tower, ViT-B-32 and ViT-L-14 at the GPU config's precision: frames/s of
  `ClipEmbedder.embed_frames` + `semantic_raw_device` on 512 frames of 16 decoded-size videos
  (uint8 at 398x224 in host memory: upload, preprocess, forward, scores, and back to the host
  only what the cache stores) against `model.encode_image` on 512 already preprocessed frames
  resident on the GPU (the raw tower); the question texts' embeddings (5 questions x 5 queries
  per video) are made outside the timed stage and their rate is logged apart;
* saliences: ms per question of the device path (semantic raw scores of all a video's questions
  on the GPU + the fusion on the host), ViT-L-14 shapes (K = 32, T = 256, D = 768), against the
  numpy host path of the same numbers;
* end to end: `Precomputer` (ViT-L-14, configs/precompute/gpu.yaml settings: PyAV scan, decode
  on every core)
  over --videos copies of the 3.1-min 720p benchmark video of bench_precompute.py, in
  videos/hour, against the decode floor (one decord pass of the video on one core, times the
  videos, divided by the cores).

Last line:

    precompute_gpu l14_frames_over_raw=<f> b32_frames_over_raw=<f> saliences_ms=<f>
    videos_per_hour=<f>        (one line)

Without CUDA the GPU parts are skipped (their values print as `skipped`); the CPU parts run at
small sizes and print on the line before: the saliences per question, numpy path against the
torch path on the CPU (ViT-L-14 shapes), ViT-B-32 scoring stage against the raw tower at batch
32, and end to end over --cpu-videos copies with ViT-B-32 fp32 on the CPU.

Run: `.venv/bin/python benchmarks/bench_precompute_gpu.py [--videos 16] [--cpu-videos 2]`.
Heavy imports stay inside functions: the spawned decode workers re-import this file.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

logger = logging.getLogger("bench_precompute_gpu")
QUESTIONS_PER_VIDEO, QUERIES = 5, 5  # a question and four options


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> float:
    """Best of `repeats` wall-clock seconds of fn() (one warm-up call first)."""
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def scoring_vs_raw(model: str, device: str, precision: str, batch: int, k: int,
                   repeats: int) -> tuple[float, float]:
    """(scoring-stage frames/s, raw-tower frames/s) of one model at `batch` frames."""
    import numpy as np
    import torch
    from videocfr.precompute.clip import ClipEmbedder
    from videocfr.precompute.saliences import semantic_raw_device

    emb = ClipEmbedder(model, "none", device=device, batch_size=batch, precision=precision)
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (k, 224, 398, 3), dtype=np.uint8)
              for _ in range(max(1, batch // k))]
    texts = [f"question {i} option {j}" for i in range(QUESTIONS_PER_VIDEO)
             for j in range(QUERIES)]
    counts = [QUERIES] * QUESTIONS_PER_VIDEO

    text = emb.embed_texts_device(texts * len(videos))  # the text tower: timed on its own

    def stage():
        glob, patches = emb.embed_frames(videos)
        back = []
        with torch.inference_mode():
            for i in range(len(videos)):
                sl = slice(i * k, (i + 1) * k)
                raw = semantic_raw_device(glob[sl], patches[sl], text[i * len(texts):
                                          (i + 1) * len(texts)], counts)
                back.append((glob[sl].cpu().numpy(), raw.cpu().numpy()))
        return back

    pixels = torch.randn(len(videos) * k, 3, *emb.image_size, device=emb.device,
                         dtype=emb.dtype)

    def raw_tower():
        with torch.inference_mode():
            emb.model.encode_image(pixels)

    n = len(videos) * k
    text_s = _timed(lambda: emb.embed_texts_device(texts * len(videos)), emb.device, 1)
    logger.info("%s: text tower %.0f texts/s (%d question texts per %d frames)", model,
                len(texts) * len(videos) / text_s, len(texts) * len(videos), n)
    return n / _timed(stage, emb.device, repeats), n / _timed(raw_tower, emb.device, repeats)


def saliences_ms(device: str, k: int = 32, t: int = 256, d: int = 768,
                 questions: int = 20) -> tuple[float, float]:
    """(device path, numpy host path) ms per question with ViT-L-14 shapes."""
    import numpy as np
    import torch
    from videocfr.cache_format.fusion import FusionConfig
    from videocfr.precompute.saliences import (
        SalienceConfig,
        question_saliences,
        scene_salience,
        semantic_raw_device,
    )

    rng = np.random.default_rng(0)
    glob = rng.normal(size=(k, d)).astype(np.float32)
    patches = rng.normal(size=(k, t, d)).astype(np.float32)
    text = rng.normal(size=(questions * QUERIES, d)).astype(np.float32)
    scene = scene_salience(glob, np.arange(k) * 10, np.array([[0, 10 * k]]))
    cfg, fusion = SalienceConfig(), FusionConfig()
    dev = torch.device(device)
    g_d, p_d, t_d = (torch.from_numpy(x).to(dev) for x in (glob, patches, text))
    counts = [QUERIES] * questions

    def device_path():
        with torch.inference_mode():
            raws = semantic_raw_device(g_d, p_d, t_d, counts).cpu().numpy()
        for i in range(questions):
            question_saliences(scene, glob, None, text[i * QUERIES:(i + 1) * QUERIES], cfg,
                               fusion, raw=raws[i])

    def host_path():
        for i in range(questions):
            question_saliences(scene, glob, patches, text[i * QUERIES:(i + 1) * QUERIES], cfg,
                               fusion)

    return (1000 * _timed(device_path, dev, 3) / questions,
            1000 * _timed(host_path, torch.device("cpu"), 1) / questions)


def decode_floor_s(path: Path) -> float:
    """One sequential decord pass over the file at native size, one thread, in seconds."""
    import decord

    t0 = time.perf_counter()
    vr = decord.VideoReader(str(path), num_threads=1)
    n = len(vr)
    for start in range(0, n, 32):
        vr.get_batch(list(range(start, min(n, start + 32)))).asnumpy()
    return time.perf_counter() - t0


def end_to_end(video: Path, copies: int, clip: dict, workdir: Path, decoder: str
               ) -> tuple[float, int]:
    """(seconds, decode workers) of a whole precompute job over `copies` copies of a video."""
    from videocfr.precompute.config import PrecomputeConfig
    from videocfr.precompute.datasets import load_dataset
    from videocfr.precompute.job import Precomputer

    vids = workdir / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(copies):
        link = vids / f"v{i:03d}.mp4"
        if not link.exists():
            link.symlink_to(video.resolve())
        for q in range(QUESTIONS_PER_VIDEO):
            recs.append({"video_id": f"v{i:03d}", "video": link.name, "question_id": f"q{q}",
                         "question": f"What happens in part {q}?", "answer": "A",
                         "options": ["A. one", "B. two", "C. three", "D. four"]})
    (workdir / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (workdir / "ds.yaml").write_text("annotation: ann.jsonl\nvideo_root: videos\n"
                                     "format: native\n")
    config = PrecomputeConfig.from_dict({"clip": clip, "sampling": {"decoder": decoder},
                                         "decode": {"prefetch": 32, "workers": "auto"}})
    dataset = load_dataset(str(workdir / "ds.yaml"))
    pre = Precomputer(config, dataset, workdir / "cache")
    _ = pre.embedder  # the model loads before the clock starts (a job loads it once)
    t0 = time.perf_counter()
    result = pre.run_job(0)
    seconds = time.perf_counter() - t0
    if result.failed:
        raise RuntimeError(f"{result.failed} of {copies} videos failed")
    return seconds, config.decode.num_workers()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=16, help="720p copies end to end (GPU)")
    parser.add_argument("--cpu-videos", type=int, default=2, help="720p copies end to end (CPU)")
    parser.add_argument("--batch", type=int, default=512, help="frames per forward on the GPU")
    parser.add_argument("--precision", default="fp16", help="fp16 or bf16 on the GPU")
    parser.add_argument("--minutes", type=float, default=3.1, help="length of the 720p video")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-e2e", action="store_true", help="no end-to-end run")
    parser.add_argument("--decoder", choices=("decord", "pyav"), default="pyav",
                        help="sampling.decoder end to end (gpu.yaml: pyav)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch
    from videocfr.precompute.worker import available_cores

    from benchmarks.bench_precompute import build_video

    cuda = torch.cuda.is_available()
    cores = available_cores()
    video = None if args.skip_e2e else build_video(args.cache_dir, args.minutes)
    floor = None
    if video is not None:
        video.read_bytes()
        floor = decode_floor_s(video)
        logger.info("decode floor: one decord pass %.2f s on one core; %d cores", floor, cores)

    if not cuda:
        logger.info("no CUDA device: the GPU parts are SKIPPED; CPU parts at small sizes")
        dev_ms, host_ms = saliences_ms("cpu")
        logger.info("saliences (ViT-L-14 shapes, CPU): torch path %.2f ms/question, numpy "
                    "path %.2f ms/question", dev_ms, host_ms)
        stage, raw = scoring_vs_raw("ViT-B-32", "cpu", "fp32", 32, 32, 1)
        logger.info("ViT-B-32 fp32 CPU batch 32: scoring stage %.1f frames/s, raw tower %.1f "
                    "frames/s", stage, raw)
        vph = "skipped"
        if video is not None and args.cpu_videos > 0:
            with tempfile.TemporaryDirectory() as tmp:
                secs, workers = end_to_end(video, args.cpu_videos, {
                    "model": "ViT-B-32", "pretrained": "none", "device": "cpu",
                    "batch_size": 32, "precision": "fp32"}, Path(tmp), args.decoder)
            vph = f"{3600 * args.cpu_videos / secs:.1f}"
            logger.info("end to end CPU (ViT-B-32 fp32, %d decode workers, scan by %s): %d "
                        "videos in %.1f s; decode floor %.1f s", workers, args.decoder,
                        args.cpu_videos, secs, floor * args.cpu_videos / cores)
        print(f"precompute_gpu_cpu_parts device=cpu cores={cores} saliences_ms={dev_ms:.3f} "
              f"saliences_numpy_ms={host_ms:.3f} b32_cpu_frames_over_raw={stage / raw:.3f} "
              f"cpu_videos_per_hour={vph}")
        print("precompute_gpu l14_frames_over_raw=skipped b32_frames_over_raw=skipped "
              "saliences_ms=skipped videos_per_hour=skipped")
        return 0

    device = "cuda"
    name = torch.cuda.get_device_name(0)
    ratios = {}
    for model in ("ViT-B-32", "ViT-L-14"):
        stage, raw = scoring_vs_raw(model, device, args.precision, args.batch, 32, args.repeats)
        ratios[model] = stage / raw
        logger.info("%s %s on %s, batch %d: scoring stage %.0f frames/s, raw tower %.0f "
                    "frames/s (%.2f)", model, args.precision, name, args.batch, stage, raw,
                    stage / raw)
    dev_ms, host_ms = saliences_ms(device)
    logger.info("saliences (ViT-L-14 shapes): device path %.3f ms/question, numpy host path "
                "%.2f ms/question", dev_ms, host_ms)
    vph = "skipped"
    if video is not None:
        with tempfile.TemporaryDirectory() as tmp:
            secs, workers = end_to_end(video, args.videos, {
                "model": "ViT-L-14", "pretrained": "none", "device": device,
                "batch_size": args.batch, "precision": args.precision}, Path(tmp),
                args.decoder)
        bound = floor * args.videos / workers
        vph = f"{3600 * args.videos / secs:.1f}"
        logger.info("end to end (ViT-L-14 %s, %d decode workers): %d videos in %.1f s = %.2f "
                    "s/video; decode floor %.1f s; e2e/floor %.2f", args.precision, workers,
                    args.videos, secs, secs / args.videos, bound, secs / bound)
    print(f"precompute_gpu_device name={name.replace(' ', '_')} cores={cores} "
          f"saliences_numpy_ms={host_ms:.3f}")
    print(f"precompute_gpu l14_frames_over_raw={ratios['ViT-L-14']:.3f} "
          f"b32_frames_over_raw={ratios['ViT-B-32']:.3f} saliences_ms={dev_ms:.3f} "
          f"videos_per_hour={vph}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
