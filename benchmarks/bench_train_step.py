"""Where the time of a CF-GRPO step goes, and the cost of the consensus-frame reward in it.

Builds a small cache (synthetic records, real mp4 clips made with OpenCV) in a temp directory,
runs a few GRPO steps with the real trainer (random weights) and reads its per-step timings:

    step_s    median wall time of a step (decode, generate, forward, rewards, update)
    shares    each phase's time / step time, summed over the timed steps: data (decode and
              processing, or only the wait for it with --workers), rollout (generate),
              reference (β > 0 forward), policy (forward + backward + optimizer), cf (α +
              prior lookup + r_cov)
    policy_forwards_per_step  calls of the policy's training forward (1 = no extra forward
              for α; the β > 0 reference forward is counted apart)

--size tiny is the test model (CPU); --size 2b is a random model with Qwen2-VL-2B's shapes, for a
GPU (--device cuda, bf16): clips are then 448x252 and K = 32 by default. The first step is a
warm-up and is not timed. The last line is
`train_step step_s=<f> cf_share=<f> rollout_share=<f>`; DESIGN.md's target is cf_share <= 0.02.

    python benchmarks/bench_train_step.py [--steps 6] [--k 32] [--g 8] [--completion 64]
        [--device cpu|cuda] [--size tiny|2b] [--workers 0]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from videocfr.cache_format import ShardWriter, finalize_cache  # noqa: E402

from tests.synthetic_cache import make_question, make_video  # noqa: E402

NUM_FILE_FRAMES = 300
FPS = 25.0


def write_video(path: Path, seed: int, size: tuple[int, int]) -> None:
    """A 12 s clip of drifting colour bars (mp4v through OpenCV)."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, w, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for i in range(NUM_FILE_FRAMES):
        frame = np.repeat(np.roll(base, 2 * i, axis=1), h, axis=0)
        writer.write(frame)
    writer.release()


def build_cache(root: Path, n_videos: int, k: int, size: tuple[int, int], dim: int = 16
                ) -> Path:
    """A finished cache of n_videos videos x 2 questions with random valid saliences."""
    cache = root / "cache"
    config = {"bench": "train_step", "num_frames": k}
    with ShardWriter(cache, config, embed_dim=dim,
                     model={"name": "bench", "pretrained": "random"}) as writer:
        for i in range(n_videos):
            vid = f"v{i:03d}"
            write_video(root / f"{vid}.mp4", seed=i, size=size)
            video = make_video(vid, k=k, dim=dim, seed=i, num_scenes=1,
                               num_frames=NUM_FILE_FRAMES, fps=FPS, path=f"{vid}.mp4")
            writer.add(video, [make_question(video, f"q{j}", seed=100 * i + j) for j in range(2)])
    finalize_cache(cache)
    return cache


SHARES = {"data": ("data_s",), "rollout": ("rollout_s", "shuffled_rollout_s"),
          "reference": ("reference_forward_s",), "policy": ("policy_forward_s", "update_s"),
          "cf": ("cf_s",)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (plus one warm-up)")
    parser.add_argument("--k", type=int, default=32, help="cached frames per video (even)")
    parser.add_argument("--g", type=int, default=8, help="completions per prompt")
    parser.add_argument("--completion", type=int, default=None,
                        help="max completion tokens (default 64 tiny, 80 2b)")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", choices=("tiny", "2b"), default="tiny",
                        help="random model shape (vlm.tiny.SHAPES)")
    parser.add_argument("--workers", type=int, default=0,
                        help="data.num_workers: decode the next prompts during a step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch
    from videocfr.train import phases
    from videocfr.train import trainer as trainer_mod
    from videocfr.train.config import TrainConfig
    from videocfr.train.metrics import read_metrics

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
        return 2
    big = args.size == "2b"
    completion = args.completion or (80 if big else 64)
    size = (448, 252) if big else (160, 96)
    calls = {"policy": 0}
    real_forward = phases.policy_forward

    def counting_forward(model, rollout, temperature, hidden_states=False):
        if model is not None and getattr(model, "training", False):
            calls["policy"] += 1
        return real_forward(model, rollout, temperature, hidden_states)

    phases.policy_forward = counting_forward
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = build_cache(root, n_videos=4, k=args.k, size=size)
        model = {"tiny": True, "tiny_shape": args.size, "bf16": args.device == "cuda"}
        if big:  # the frames' own size (448x252): 144 visual tokens per temporal group
            model["video_max_pixels"] = size[0] * size[1]
        cfg = TrainConfig.from_dict({
            "model": model,
            "data": {"cache_dir": str(cache), "video_root": str(root),
                     "num_workers": args.workers},
            "grpo": {"num_generations": args.g, "max_completion_length": completion,
                     "beta": args.beta, "learning_rate": 1e-3 if not big else 1e-6},
            "run": {"max_steps": args.steps + 1, "output_dir": str(root / "run"),
                    "checkpoint_every": 0, "device": args.device, "tensorboard": False},
        })
        trainer_mod.export_final = lambda *a, **k: None  # a 2B export is not what is timed
        trainer_mod.train(cfg)
        rows = read_metrics(root / "run")[1:]  # drop the warm-up step
    step_s = float(np.median([r["step_s"] for r in rows]))
    total = sum(r["step_s"] for r in rows)
    shares = {name: sum(r.get(k, 0.0) for r in rows for k in keys) / total
              for name, keys in SHARES.items()}
    cf_ms = 1e3 * float(np.median([r["cf_s"] for r in rows]))
    peak = (f" peak_gb={torch.cuda.max_memory_allocated() / 2**30:.1f}"
            if args.device == "cuda" else "")
    print(f"config size={args.size} device={args.device} K={args.k} G={args.g} "
          f"completion<={completion} beta={args.beta} workers={args.workers} "
          f"timed_steps={len(rows)} torch_threads={torch.get_num_threads()}{peak}")
    print("shares " + " ".join(f"{name}={value:.3f}" for name, value in shares.items()))
    print(f"cf_ms_median={cf_ms:.3f} policy_forwards_per_step="
          f"{calls['policy'] / (args.steps + 1):.2f}")
    print(f"train_step step_s={step_s:.4f} cf_share={shares['cf']:.5f} "
          f"rollout_share={shares['rollout']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
