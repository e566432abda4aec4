"""The selector policy: distinct sorted picks, padding masks, log-probs that are probabilities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from videocfr.selector.grpo import curriculum_budget
from videocfr.selector.policy import FrameSelector, PolicyConfig, collate


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine
    yield
    torch.set_num_threads(threads)


def _policy(dim=8, seed=0):
    torch.manual_seed(seed)
    return FrameSelector(PolicyConfig(embed_dim=dim, d_model=16, num_layers=2, num_heads=2)).eval()


def _items(ks, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    frames = [rng.standard_normal((k, dim)).astype(np.float32) for k in ks]
    times = [np.linspace(0, 1, k).astype(np.float32) for k in ks]
    questions = [rng.standard_normal(dim).astype(np.float32) for _ in ks]
    return frames, times, questions


@pytest.mark.parametrize("ks, n", [([6, 10, 4], 4), ([12, 12], 12), ([3, 9], 1)],
                         ids=["ragged", "n=K", "n=1"])
def test_selector_picks_distinct_sorted_real_candidates(ks, n):
    policy = _policy()
    batch = collate(*_items(ks))
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        sel = policy.sample(batch, n, generator=gen)
        for b, k in enumerate(ks):
            pos = sel.positions[b].numpy()
            assert len(set(pos.tolist())) == n, "picked a candidate twice"
            assert (np.diff(pos) > 0).all() and pos.max() < k, f"padding picked: {pos}, K={k}"
            assert sorted(sel.order[b].tolist()) == pos.tolist()
    assert sel.logp.shape == sel.entropy.shape == (len(ks), n)
    assert (sel.logp <= 0).all() and (sel.entropy >= -1e-6).all()


def test_selector_teacher_forced_logp_matches_sampling():
    policy = _policy()
    batch = collate(*_items([7, 11, 5]))
    sel = policy.sample(batch, 5, generator=torch.Generator().manual_seed(1))
    logp, ent = policy.log_prob(batch, sel.order)
    torch.testing.assert_close(logp, sel.logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, sel.entropy, atol=1e-5, rtol=1e-5)


def test_selector_padding_does_not_change_a_question():
    """A question alone and the same question padded next to a longer one: same log-probs."""
    policy = _policy()
    frames, times, qs = _items([5, 13])
    order = torch.tensor([[4, 0, 2]])
    alone = policy.log_prob(collate(frames[:1], times[:1], qs[:1]), order)[0]
    padded = policy.log_prob(collate(frames, times, qs), torch.tensor([[4, 0, 2], [1, 2, 3]]))[0]
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)


def test_selector_sequence_probabilities_sum_to_one():
    """Over every ordered pick sequence of n=2 from K=4, the probabilities sum to 1."""
    policy = _policy()
    batch = collate(*_items([4]))
    orders = torch.tensor(list(itertools.permutations(range(4), 2)))
    rows = batch.repeat(len(orders))
    logp, _ = policy.log_prob(rows, orders)
    assert float(logp.detach().sum(dim=1).exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_selector_rejects_budget_above_k_and_repeated_picks():
    policy = _policy()
    batch = collate(*_items([6, 3]))
    with pytest.raises(ValueError, match="smallest K in this batch is 3"):
        policy.sample(batch, 4)
    with pytest.raises(ValueError, match="already chosen"):
        policy.log_prob(batch, torch.tensor([[1, 1], [0, 2]]))
    with pytest.raises(ValueError, match="padded"):
        policy.log_prob(batch, torch.tensor([[1, 2], [0, 4]]))


def test_selector_greedy_is_deterministic():
    policy = _policy()
    batch = collate(*_items([9, 9]))
    a = policy.sample(batch, 3, greedy=True).positions
    b = policy.sample(batch, 3, greedy=True).positions
    assert torch.equal(a, b)


@pytest.mark.parametrize("step, n", [(0, 4), (99, 4), (100, 8), (250, 16), (300, 32),
                                     (10_000, 32)])
def test_selector_curriculum_budget(step, n):
    assert curriculum_budget(step, [0, 100, 200, 300], [4, 8, 16, 32]) == n


def test_selector_repeats_encode_once_with_the_same_result():
    policy = _policy()
    batch = collate(*_items([6, 9]))
    sel = policy.sample(batch, 3, repeats=4, generator=torch.Generator().manual_seed(2))
    assert sel.order.shape == (8, 3) and (sel.positions[:4] < 6).all()
    a = policy.log_prob(batch, sel.order, repeats=4)[0]
    b = policy.log_prob(batch.repeat(4), sel.order)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, sel.logp, atol=1e-5, rtol=1e-5)


def test_selector_grpo_step_with_several_updates_and_none_rewards():
    """Later updates see ρ != 1 (clipping applies); a group with a None reward is left out."""
    from videocfr.selector.grpo import grpo_step
    from videocfr.selector.synthetic import needle_set

    policy = _policy(dim=8)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=0.05)
    data = needle_set(3, 10, 8, np.random.default_rng(0))

    def reward(positions):  # question 1's group does not apply
        return [None if i // 4 == 1 else float((p == data.needles[i // 4]).any())
                for i, p in enumerate(positions)]

    out = grpo_step(policy, opt, data.batch, reward, n=3, num_samples=4, updates=4,
                    epsilon=0.1, generator=torch.Generator().manual_seed(0))
    assert out.used_groups == 2 and out.none_groups == 1
    assert np.isnan(out.rewards[4:8]).all() and not np.isnan(out.rewards[:4]).any()
    assert np.isfinite(out.loss) and 0 < out.stats["clip_frac"] <= 1, out.stats
