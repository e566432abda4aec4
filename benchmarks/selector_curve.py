"""The selector's learning curve on synthetic needle data (the learning test's setting), as a PNG.

K = 32 candidates, one needle per question (its embedding is the question's plus noise), reward 1
when the subset of n = 4 holds it: chance is 0.125. Every step trains on 16 fresh questions x 8
subsets; the hit rate is measured on 256 held-out questions (sampled picks) after every step.

    python benchmarks/selector_curve.py [--steps 60] [-o docs/img/selector_curve.png]

Last line: `selector_curve start=<hit rate> end=<hit rate> steps=<N> seconds=<wall>`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from videocfr.selector.grpo import grpo_step  # noqa: E402
from videocfr.selector.policy import FrameSelector, PolicyConfig  # noqa: E402
from videocfr.selector.synthetic import NeedleReward, hit_rate, needle_set  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="docs/img/selector_curve.png")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    dim, k, n, group, batch = 16, 32, 4, 8, 16
    policy = FrameSelector(PolicyConfig(embed_dim=dim, d_model=32, num_layers=1, num_heads=2))
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    held_out = needle_set(256, k, dim, np.random.default_rng(1000 + args.seed))
    gen = torch.Generator().manual_seed(args.seed)

    def evaluate() -> float:
        with torch.no_grad():
            sel = policy.sample(held_out.batch, n, generator=torch.Generator().manual_seed(7))
        return hit_rate(sel.positions.numpy(), held_out.needles)

    curve = [evaluate()]
    t0 = time.perf_counter()
    for _ in range(args.steps):
        data = needle_set(batch, k, dim, rng)
        grpo_step(policy, opt, data.batch, NeedleReward(data.needles, group), n=n,
                  num_samples=group, entropy_coef=0.0, generator=gen)
        curve.append(evaluate())
    seconds = time.perf_counter() - t0

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(range(len(curve)), curve, marker=".", label="refocus policy (held-out questions)")
    ax.axhline(n / k, color="grey", ls="--", label=f"chance n/K = {n / k:.3f}")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(f"needle hit rate (n={n}, K={k})")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    ax.set_title("ReFoCUS selector on synthetic needles (CPU)")
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print("hit rate by step: " + " ".join(f"{h:.2f}" for h in curve))
    print(f"wrote {out}")
    print(f"selector_curve start={curve[0]:.3f} end={curve[-1]:.3f} steps={args.steps} "
          f"seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
