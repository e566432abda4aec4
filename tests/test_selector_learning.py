"""Learning tests: they fail when the GRPO gradient is wrong (synthetic needle data, CPU).

Each question has one needle candidate among K = 32 (its embedding is the question's plus
noise); the reward is 1 when the subset of n = 4 holds it, so chance is 4/32 = 0.125.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from videocfr.selector.grpo import grpo_step
from videocfr.selector.policy import FrameSelector, PolicyConfig
from videocfr.selector.synthetic import NeedleReward, hit_rate, needle_set

D, K, N_PICK, GROUP, BATCH = 16, 32, 4, 8, 16


def _train(steps: int, advantage_fn=None, entropy_coef=0.0, seed=0):
    torch.manual_seed(seed)
    policy = FrameSelector(PolicyConfig(embed_dim=D, d_model=32, num_layers=1, num_heads=2))
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    evalset = needle_set(256, K, D, np.random.default_rng(1000 + seed))
    gen = torch.Generator().manual_seed(seed)
    kwargs = {} if advantage_fn is None else {"advantage_fn": advantage_fn}

    def evaluate():
        with torch.no_grad():
            sel = policy.sample(evalset.batch, N_PICK, generator=torch.Generator().manual_seed(7))
        return hit_rate(sel.positions.numpy(), evalset.needles)

    curve = [evaluate()]
    for _ in range(steps):
        data = needle_set(BATCH, K, D, rng)
        grpo_step(policy, opt, data.batch, NeedleReward(data.needles, GROUP), n=N_PICK,
                  num_samples=GROUP, entropy_coef=entropy_coef, generator=gen, **kwargs)
        curve.append(evaluate())
    return policy, curve


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is slower with threads on a shared machine
    yield
    torch.set_num_threads(threads)


def test_selector_learns_the_needle():
    _, curve = _train(40)
    assert curve[0] < 0.25, f"the untrained policy already finds the needle: {curve[0]}"
    assert curve[-1] >= 0.9, f"hit rate by step: {curve}"


def test_selector_zero_advantages_change_nothing():
    torch.manual_seed(0)
    before = FrameSelector(PolicyConfig(embed_dim=D, d_model=32, num_layers=1,
                                        num_heads=2)).state_dict()
    policy, curve = _train(15, advantage_fn=lambda r, g: torch.zeros_like(r))
    for name, value in policy.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} moved with zero advantages"
    assert curve[-1] == curve[0]


def test_selector_negated_advantages_avoid_the_needle():
    """The sign matters: ascending the negated objective drives the hit rate below chance."""
    from videocfr.train.grpo import group_advantages

    _, curve = _train(25, advantage_fn=lambda r, g: -group_advantages(r, g))
    assert curve[-1] < 0.06, f"hit rate by step: {curve}"
