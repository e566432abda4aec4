"""Cost of the consensus-frame reward inside a CF-GRPO step (tiny Qwen2.5-VL, CPU).

Builds a small cache (synthetic records, real mp4 clips made with OpenCV) in a temp directory,
runs a few GRPO steps with the real trainer and reads its per-step timings:

    step_s    median wall time of a step (decode, generate, forward, rewards, update)
    cf_share  (α + prior lookup + r_cov time) / step time, summed over the timed steps
    policy_forwards_per_step  calls of the policy's training forward (1 = no extra forward
              for α; the β > 0 reference forward is counted apart)

The first step is a warm-up and is not timed. The last line is
`train_step step_s=<f> cf_share=<f>`; DESIGN.md's target is cf_share <= 0.02.

    python benchmarks/bench_train_step.py [--steps 6] [--k 32] [--g 8] [--completion 64]
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


def write_video(path: Path, seed: int, size: tuple[int, int] = (160, 96)) -> None:
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


def build_cache(root: Path, n_videos: int, k: int, dim: int = 16) -> Path:
    """A finished cache of n_videos videos x 2 questions with random valid saliences."""
    cache = root / "cache"
    config = {"bench": "train_step", "num_frames": k}
    with ShardWriter(cache, config, embed_dim=dim,
                     model={"name": "bench", "pretrained": "random"}) as writer:
        for i in range(n_videos):
            vid = f"v{i:03d}"
            write_video(root / f"{vid}.mp4", seed=i)
            video = make_video(vid, k=k, dim=dim, seed=i, num_scenes=1,
                               num_frames=NUM_FILE_FRAMES, fps=FPS, path=f"{vid}.mp4")
            writer.add(video, [make_question(video, f"q{j}", seed=100 * i + j) for j in range(2)])
    finalize_cache(cache)
    return cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (plus one warm-up)")
    parser.add_argument("--k", type=int, default=32, help="cached frames per video (even)")
    parser.add_argument("--g", type=int, default=8, help="completions per prompt")
    parser.add_argument("--completion", type=int, default=64, help="max completion tokens")
    parser.add_argument("--beta", type=float, default=0.04)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch
    from videocfr.train import phases
    from videocfr.train import trainer as trainer_mod
    from videocfr.train.config import TrainConfig
    from videocfr.train.metrics import read_metrics

    torch.set_num_threads(max(1, torch.get_num_threads()))
    calls = {"policy": 0}
    real_forward = phases.policy_forward

    def counting_forward(model, rollout, temperature, hidden_states=False):
        if model is not None and getattr(model, "training", False):
            calls["policy"] += 1
        return real_forward(model, rollout, temperature, hidden_states)

    phases.policy_forward = counting_forward
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = build_cache(root, n_videos=4, k=args.k)
        cfg = TrainConfig.from_dict({
            "model": {"tiny": True},
            "data": {"cache_dir": str(cache), "video_root": str(root)},
            "grpo": {"num_generations": args.g, "max_completion_length": args.completion,
                     "beta": args.beta, "learning_rate": 1e-3},
            "run": {"max_steps": args.steps + 1, "output_dir": str(root / "run"),
                    "checkpoint_every": 0, "device": "cpu", "tensorboard": False},
        })
        trainer_mod.train(cfg)
        rows = read_metrics(root / "run")[1:]  # drop the warm-up step
    step_s = float(np.median([r["step_s"] for r in rows]))
    cf_share = sum(r["cf_s"] for r in rows) / sum(r["step_s"] for r in rows)
    cf_ms = 1e3 * float(np.median([r["cf_s"] for r in rows]))
    print(f"config K={args.k} G={args.g} completion<={args.completion} beta={args.beta} "
          f"timed_steps={len(rows)} torch_threads={torch.get_num_threads()}")
    print(f"cf_ms_median={cf_ms:.3f} policy_forwards_per_step="
          f"{calls['policy'] / (args.steps + 1):.2f}")
    print(f"train_step step_s={step_s:.4f} cf_share={cf_share:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
