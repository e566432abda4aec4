"""Cost of a ReFoCUS selector GRPO step and of inference, CPU, at K = 32 and K = 512.

Synthetic questions (random unit embeddings, D = 512 as CLIP ViT-B-32) feed the real policy and
`grpo_step`; the reward is the margin reward of the frozen scorer's tiny random model
(`vlm.scorer.FrozenScorer.tiny`) shown random 64x64 frames (no decode, so the scorer's own
cost is measured). Where vlm.scorer is not installed the needle reward stands in and the
output says `reward=needle` (then reward_share is near zero and says nothing about a VLM).

    step_ms            median wall time of one GRPO step (rollout + reward + update)
    selections_per_s   greedy selections per second (inference, batches of 64 questions)
    reward_share       reward time / step time, summed over the timed steps

Printed per K, then the ratio K=512 / K=32 (the baseline measured in the same process), and
last the line `selector step_ms= selections_per_s= reward_share=` for K = 512.

    python benchmarks/bench_selector.py [--steps 5] [--batch 4] [--samples 8] [--n 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from videocfr.selector.grpo import grpo_step  # noqa: E402
from videocfr.selector.policy import FrameSelector, PolicyConfig  # noqa: E402
from videocfr.selector.synthetic import NeedleReward, needle_set  # noqa: E402


def make_reward(args, data):
    """(callable positions -> rewards, name): the tiny scorer's margin, or the needle reward."""
    try:
        from videocfr.vlm.scorer import FrozenScorer, ScoreItem
    except ImportError:
        return NeedleReward(data.needles, args.samples), "needle"
    scorer = FrozenScorer.tiny(seed=0)
    frames = np.random.default_rng(0).integers(0, 255, (data.batch.frames.shape[1], 64, 64, 3),
                                               np.uint8)
    options = ["A. red", "B. green", "C. blue", "D. yellow"]

    def reward(positions):
        items = [ScoreItem(frames=frames[p], question="What colour flashes?", options=options,
                           answer="A") for p in positions]
        return np.tanh(scorer.margins(items) / 2).tolist()

    return reward, "margin(tiny scorer)"


def run(k: int, args) -> dict:
    torch.manual_seed(0)
    dim = 512
    policy = FrameSelector(PolicyConfig(embed_dim=dim))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    data = needle_set(args.batch, k, dim, np.random.default_rng(0))
    base, name = make_reward(args, data)
    spent = [0.0]

    def timed(positions):
        t = time.perf_counter()
        out = base(positions)
        spent[0] += time.perf_counter() - t
        return out

    steps = []
    for i in range(args.steps + 1):  # the first step warms up and is not timed
        spent_before = spent[0]
        t = time.perf_counter()
        grpo_step(policy, opt, data.batch, timed, n=args.n, num_samples=args.samples)
        if i:
            steps.append((time.perf_counter() - t, spent[0] - spent_before))
    infer = needle_set(64, k, dim, np.random.default_rng(1))
    with torch.no_grad():
        policy.sample(infer.batch, args.n, greedy=True)
        t = time.perf_counter()
        for _ in range(args.steps):
            policy.sample(infer.batch, args.n, greedy=True)
        sel_s = 64 * args.steps / (time.perf_counter() - t)
    step_ms = 1000 * statistics.median(s for s, _ in steps)
    share = sum(r for _, r in steps) / sum(s for s, _ in steps)
    print(f"K={k:4d} reward={name}: step_ms={step_ms:.1f} selections_per_s={sel_s:.0f} "
          f"reward_share={share:.3f}  (B={args.batch} questions x N={args.samples} subsets, "
          f"n={args.n}, D={dim}, torch threads={torch.get_num_threads()})")
    return {"step_ms": step_ms, "sel_s": sel_s, "share": share}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    small, large = run(32, args), run(512, args)
    print(f"K=512 vs K=32: step {large['step_ms'] / small['step_ms']:.2f}x, selections/s "
          f"{large['sel_s'] / small['sel_s']:.2f}x")
    print(f"selector step_ms={large['step_ms']:.1f} selections_per_s={large['sel_s']:.0f} "
          f"reward_share={large['share']:.3f}")


if __name__ == "__main__":
    main()
