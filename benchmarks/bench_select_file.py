"""Throughput of `videocfr select --selection-file` at K = 512 candidates, CPU.

A synthetic cache (tests/synthetic_cache.py: random unit CLIP embeddings, D = 512 as ViT-B-32,
K = 512 candidates per video) is written once; then the whole command runs in this process per
strategy (open the cache, choose n frames for every question, write the selection file):

    uniform      baseline: reads no prior (cache reading + file writing alone)
    prior-topn   the consensus prior's top n
    refocus      a ReFoCUS selector checkpoint (random weights: its cost, not its quality)

Each prints questions/s and its ratio to uniform; the last line is
`select_file questions_per_s=prior-topn:X,refocus:Y K=512`.

    python benchmarks/bench_select_file.py [--videos 16] [--questions 8] [--n 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from synthetic_cache import make_cache  # noqa: E402
from videocfr.cache_format import Cache  # noqa: E402
from videocfr.selector.checkpoint import save_checkpoint  # noqa: E402
from videocfr.selector.policy import FrameSelector, PolicyConfig  # noqa: E402
from videocfr.selector.select import main as select_main  # noqa: E402

K, DIM = 512, 512


def timed(argv: list[str], repeat: int) -> float:
    """Best wall time of `videocfr select argv` over `repeat` runs (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        if select_main(argv) != 0:
            raise SystemExit(f"videocfr select {' '.join(argv)} failed")
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--questions", type=int, default=8, help="questions per video")
    p.add_argument("--n", type=int, default=32, help="frames chosen per question")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_cache(tmp / "cache", n_videos=args.videos, n_questions=args.questions, k=K,
                   dim=DIM, n_failed=0)
        cache = Cache(tmp / "cache")
        torch.manual_seed(0)
        policy = FrameSelector(PolicyConfig(embed_dim=DIM))
        ckpt = save_checkpoint(tmp / "run", 0, policy, torch.optim.AdamW(policy.parameters()),
                               torch.Generator().manual_seed(0), {}, cache.config_hash)
        q = len(list(cache.keys()))
        base = ["--cache", str(tmp / "cache"), "--n", str(args.n), "--selection-file"]
        rates = {}
        for name, extra in (("uniform", ["--strategy", "uniform"]),
                            ("prior-topn", ["--strategy", "prior-topn"]),
                            ("refocus", ["--checkpoint", str(ckpt)])):
            wall = timed(base + [str(tmp / f"{name}.json")] + extra, args.repeat)
            rates[name] = q / wall
            print(f"{name:10s} K={K} n={args.n} questions={q}: {wall:.2f} s, "
                  f"{rates[name]:.0f} questions/s ({rates[name] / rates['uniform']:.2f}x uniform)")
    print(f"select_file questions_per_s=prior-topn:{rates['prior-topn']:.0f},"
          f"refocus:{rates['refocus']:.0f} K={K}")


if __name__ == "__main__":
    main()
