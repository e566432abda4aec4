"""GRPO loss normalisation (METHOD §6): `sequence` vs `token` on ragged completions, KL clamp."""

from __future__ import annotations

import math

import pytest
import torch
from videocfr.train.grpo import grpo_loss

# three completions of 1, 4 and 2 tokens (padding after each one's EOS)
MASK = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float32)
ADV = torch.tensor([1.0, -0.5, 2.0])
LOGP = torch.tensor([[-1.0, -9.0, -9.0, -9.0],
                     [-0.5, -1.5, -2.0, -0.1],
                     [-0.3, -0.7, -9.0, -9.0]])
REF = torch.tensor([[-1.2, 0.0, 0.0, 0.0],
                    [-0.5, -1.0, -2.5, -0.1],
                    [-0.1, -0.7, 0.0, 0.0]])
BETA = 0.04


def _per_token(logp, ref, adv):
    """By hand: ρ = 1 (one update), so loss_t = -A + β (exp(d) - d - 1), d = ref - logp."""
    rows = []
    for i in range(len(adv)):
        rows.append([-float(adv[i]) + BETA * (math.exp(r - p) - (r - p) - 1)
                     for p, r in zip(logp[i].tolist(), ref[i].tolist())])
    return rows


def test_loss_type_sequence_is_mean_of_completion_means():
    loss, m = grpo_loss(LOGP, ADV, MASK, ref_logp=REF, beta=BETA, loss_type="sequence")
    t = _per_token(LOGP, REF, ADV)
    lengths = [1, 4, 2]
    expected = sum(sum(t[i][:n]) / n for i, n in enumerate(lengths)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["completion_length"] == pytest.approx(7 / 3)


def test_loss_type_token_is_mean_over_all_completion_tokens():
    loss, _ = grpo_loss(LOGP, ADV, MASK, ref_logp=REF, beta=BETA, loss_type="token")
    t = _per_token(LOGP, REF, ADV)
    expected = sum(sum(t[i][:n]) for i, n in enumerate([1, 4, 2])) / 7
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_types_differ_on_ragged_and_agree_on_equal_lengths():
    seq, _ = grpo_loss(LOGP, ADV, MASK, ref_logp=REF, beta=BETA, loss_type="sequence")
    tok, _ = grpo_loss(LOGP, ADV, MASK, ref_logp=REF, beta=BETA, loss_type="token")
    assert abs(seq.item() - tok.item()) > 1e-3
    full = torch.ones_like(MASK)
    seq, _ = grpo_loss(LOGP, ADV, full, ref_logp=REF, beta=BETA, loss_type="sequence")
    tok, _ = grpo_loss(LOGP, ADV, full, ref_logp=REF, beta=BETA, loss_type="token")
    assert seq.item() == pytest.approx(tok.item(), rel=1e-6)


def test_loss_gradients_weigh_tokens_as_each_type_says():
    # d loss / d logp_it = -A_i / n_i (sequence, divided by N) or -A_i / Σ n (token), at ρ = 1
    for loss_type, scale in (("sequence", lambda n: 1 / (3 * n)), ("token", lambda n: 1 / 7)):
        logp = LOGP.clone().requires_grad_(True)
        loss, _ = grpo_loss(logp, ADV, MASK, beta=0.0, loss_type=loss_type)
        loss.backward()
        for i, n in enumerate([1, 4, 2]):
            want = torch.tensor([-ADV[i].item() * scale(n)] * n + [0.0] * (4 - n))
            torch.testing.assert_close(logp.grad[i], want)


def test_loss_kl_log_ratio_is_clamped_to_ten():
    logp = torch.tensor([[-30.0, -1.0]])
    ref = torch.tensor([[-1.0, -31.0]])  # d = +29 and -30: clamped to +10 and -10
    _, m = grpo_loss(logp, torch.zeros(1), torch.ones(1, 2), ref_logp=ref, beta=BETA)
    k3 = lambda d: math.exp(d) - d - 1  # noqa: E731
    assert m["kl"] == pytest.approx((k3(10) + k3(-10)) / 2, rel=1e-6)
    assert math.isfinite(m["kl"])


def test_loss_type_unknown_is_an_error():
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(LOGP, ADV, MASK, beta=0.0, loss_type="dapo")
