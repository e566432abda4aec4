"""The selector on the complementary-pair task (selector/pairs.py) beside zero-parameter baselines.

Per seed: a training cache of 256 pair videos (K in 12..20), the selector trainer
(`selector.trainer.train`, reward `PairReward`, n = 2, 16 questions x 8 subsets per step), then
two held-out caches written from other seeds (none of their videos, questions, embeddings or kind
positions were seen in training): one with K in 12..20 like training, one with longer videos,
K in 24..32 (lengths never seen). Printed solve rates (a subset solves its question when it holds
an A and a B frame):

- learned: the trained policy's greedy picks (as `videocfr select` makes them);
- unconditioned: the top n of the same policy's first-step scores (its conditioning on the frames
  already picked taken away);
- topn: the n candidates most similar to the question by cosine (no parameters);
- random: one uniform draw per question; chance: the exact chance rate of a uniform draw.

    python benchmarks/selector_pairs.py [--steps 100] [--seeds 3]

Last line: `selector_pairs n=2 learned= unconditioned= topn= random= chance= seeds=` (means
over seeds, on the held-out caches with unseen lengths).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from videocfr.selector.pairs import (  # noqa: E402
    PairReward,
    evaluate_pairs,
    pair_config,
    write_pair_cache,
)
from videocfr.selector.trainer import train  # noqa: E402

KEYS = ("learned", "unconditioned", "topn", "random", "chance")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-videos", type=int, default=256)
    p.add_argument("--held-out-videos", type=int, default=256)
    p.add_argument("--n", type=int, default=2)
    args = p.parse_args()
    logging.disable(logging.INFO)
    unseen = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            root = Path(tmp) / f"seed{seed}"
            kinds = write_pair_cache(root / "train", args.train_videos, seed=1000 * seed + 1)
            held = {"same-K": write_pair_cache(root / "held-same", args.held_out_videos,
                                               seed=1000 * seed + 2),
                    "unseen-K": write_pair_cache(root / "held-long", args.held_out_videos,
                                                 seed=1000 * seed + 3, k_range=(24, 32))}
            t0 = time.perf_counter()
            run = train(pair_config(root / "train", root / "run", steps=args.steps, n=args.n,
                                    seed=seed), reward=PairReward(kinds))
            seconds = time.perf_counter() - t0
            for name, truth in held.items():
                cache = root / ("held-same" if name == "same-K" else "held-long")
                r = evaluate_pairs(cache, truth, args.n, checkpoint=run, seed=seed)
                print(f"seed={seed} held-out {name:8s} " + " ".join(
                    f"{k}={r[k]:.3f}" for k in KEYS) + f" train_s={seconds:.1f}")
                if name == "unseen-K":
                    unseen.append(r)
    mean = {k: float(np.mean([r[k] for r in unseen])) for k in KEYS}
    print(f"selector_pairs n={args.n} " + " ".join(f"{k}={mean[k]:.3f}" for k in KEYS)
          + f" seeds={args.seeds}")


if __name__ == "__main__":
    main()
