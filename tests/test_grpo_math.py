"""GRPO math (METHOD §6): advantages, log-probs, clipped loss with KL, on known numbers."""

from __future__ import annotations

import math

import pytest
import torch
from videocfr.train.grpo import group_advantages, grpo_loss, selective_log_softmax

# --- advantages ---------------------------------------------------------------------------------


def test_group_advantages_known_numbers():
    a = group_advantages(torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), group_size=3)
    # group 0: mean 2, unbiased std 1 -> (R - 2) / (1 + 1e-4); group 1: all equal -> 0
    expected = torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]) / torch.tensor(
        [1 + 1e-4] * 3 + [1.0] * 3
    )
    torch.testing.assert_close(a, expected)
    b = group_advantages(torch.tensor([0.0, 4.0]), group_size=2, eps=0.0)
    # std of [0, 4] (unbiased) = 2*sqrt(2)
    torch.testing.assert_close(b, torch.tensor([-2 / (2 * math.sqrt(2)), 2 / (2 * math.sqrt(2))]))


def test_a_cf_term_shared_by_a_groups_correct_completions_leaves_the_advantages():
    # why the world policy answers "<word> <letter>" (train/world_policy.py): when every correct
    # completion of a group is the same text, they share α and so r_cov; then R = acc·(1 + λ·r)
    # is acc scaled per group, and the group's std normalisation removes the scale — λ = 5 and
    # λ = 0 give the same advantages (up to eps). Different r_cov among them breaks the tie.
    acc = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    r_cov = torch.tensor([0.3, 0.0, 0.3, 0.0, 0.0, 0.7, 0.7, 0.7])  # per group of 4: one value
    plain = group_advantages(acc, 4)
    torch.testing.assert_close(group_advantages(acc * (1 + 5 * r_cov), 4), plain, atol=1e-3,
                               rtol=0)
    mixed = r_cov.clone()
    mixed[2] = 0.1  # two correct completions with different frame usage
    assert not torch.allclose(group_advantages(acc * (1 + 5 * mixed), 4), plain, atol=1e-2)


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="whole number of groups"):
        group_advantages(torch.ones(5), group_size=2)
    with pytest.raises(ValueError, match=">= 2"):
        group_advantages(torch.ones(4), group_size=1)
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([1.0, float("nan")]), group_size=2)


# --- log-probs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_selective_log_softmax_matches_log_softmax(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 11, generator=g) * 4).to(dtype)
    ids = torch.randint(0, 11, (3, 5), generator=g)
    want = torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    got = selective_log_softmax(logits, ids)
    assert got.dtype == torch.float32 and got.shape == (3, 5)  # half logits: fp32 log-probs
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="shift"):
        selective_log_softmax(logits, ids[:, :4])


# --- loss ---------------------------------------------------------------------------------------

# Two completions, 3 tokens; the last token of completion 0 is padding.
RATIO = torch.tensor([[1.5, 0.5, 1.0], [0.7, 1.1, 1.3]])
ADV = torch.tensor([1.0, -2.0])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
# completion 0 (A = +1): -min(1.5, 1.2) = -1.2, -min(0.5, 0.8) = -0.5     -> mean -0.85
# completion 1 (A = -2): -min(-1.4, -1.6) = 1.6, 2.2, -min(-2.6, -2.4) = 2.6 -> mean 6.4 / 3
POLICY_LOSS = (-0.85 + 6.4 / 3) / 2


def _logps():
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.2, -1.0]])
    logp = (old + torch.log(RATIO)).requires_grad_(True)
    return logp, old


def test_loss_clipping_known_numbers_and_metrics():
    logp, old = _logps()
    loss, m = grpo_loss(logp, ADV, MASK, old_logp=old, beta=0.0)
    assert loss.item() == pytest.approx(POLICY_LOSS, rel=1e-6)
    # clipped term active: (0, 0) ratio 1.5 > 1.2 with A > 0; (1, 0) ratio 0.7 < 0.8 with A < 0
    assert m["clip_ratio/high_mean"] == pytest.approx(1 / 5)
    assert m["clip_ratio/low_mean"] == pytest.approx(1 / 5)
    assert m["clip_ratio/region_mean"] == pytest.approx(4 / 5)  # 1.5, 0.5, 0.7, 1.3
    assert m["ratio_mean"] == pytest.approx((1.5 + 0.5 + 0.7 + 1.1 + 1.3) / 5, rel=1e-6)
    assert m["completion_length"] == pytest.approx(2.5)
    assert m["kl"] == 0.0


def test_loss_gradient_zero_where_clipped():
    logp, old = _logps()
    loss, _ = grpo_loss(logp, ADV, MASK, old_logp=old, beta=0.0)
    loss.backward()
    # d/dlogp of -ρA/len/N = -ρA/(len N) where the unclipped term is active, 0 where clipped
    expected = torch.tensor(
        [[0.0, -0.5 * 1.0 / (2 * 2), 0.0],
         [0.0, 1.1 * 2.0 / (3 * 2), 1.3 * 2.0 / (3 * 2)]]
    )
    torch.testing.assert_close(logp.grad, expected)


def test_loss_with_kl_known_numbers():
    logp, old = _logps()
    d = torch.tensor([[0.5, -0.3, 9.0], [0.1, 0.0, -1.0]])  # ref - logp (9.0 is masked out)
    ref = (logp + d).detach()
    k3 = torch.exp(d) - d - 1
    loss, m = grpo_loss(logp, ADV, MASK, old_logp=old, ref_logp=ref, beta=0.04)
    kl_seq = [(k3[0, 0] + k3[0, 1]) / 2, (k3[1, 0] + k3[1, 1] + k3[1, 2]) / 3]
    expected = POLICY_LOSS + 0.04 * float(kl_seq[0] + kl_seq[1]) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["kl"] == pytest.approx(float(k3[0, :2].sum() + k3[1].sum()) / 5, rel=1e-6)


def test_one_update_per_batch_ratio_one_gradient_minus_advantage():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([0.5, -1.0])
    loss, m = grpo_loss(logp, adv, torch.ones(2, 2), beta=0.0)  # old_logp=None: ρ = 1
    assert loss.item() == pytest.approx(-(0.5 + -1.0) / 2)
    assert m["ratio_mean"] == 1.0 and m["clip_ratio/region_mean"] == 0.0
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.125, -0.125], [0.25, 0.25]]))


def test_loss_errors():
    logp, old = _logps()
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, ADV, MASK, old_logp=old, beta=0.04)
    with pytest.raises(ValueError, match="old_logp has shape"):
        grpo_loss(logp, ADV, MASK, old_logp=old[:, :2], beta=0.0)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, ADV[:1], MASK, beta=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        grpo_loss(logp, ADV, MASK, epsilon=0.0, beta=0.0)


def test_two_updates_on_the_tiny_model_ratio_not_one():
    """Old log-probs from the sampling policy, one optimiser step, then a second update: ρ ≠ 1."""
    from videocfr.vlm.tiny import tiny_qwen2_5_vl

    model = tiny_qwen2_5_vl(seed=0).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 250, (4, 12), generator=g)
    mask = torch.ones(4, 11)
    mask[0, 8:] = 0

    def logps():
        logits = model(input_ids=ids).logits[:, :-1]  # (N, T-1, V): position t predicts t+1
        return selective_log_softmax(logits, ids[:, 1:])

    with torch.no_grad():
        old = logps()
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.5, 0.2]), group_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    for step in range(2):
        loss, m = grpo_loss(logps(), adv, mask, old_logp=old, ref_logp=old, beta=0.04)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:  # first update: the policy is the sampling policy
            assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and m["kl"] < 1e-6
    assert torch.isfinite(loss) and abs(m["ratio_mean"] - 1.0) > 1e-4 and m["kl"] > 0
