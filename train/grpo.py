"""GRPO math (METHOD.md §6): group-normalised advantages and the token-level clipped loss.

For G completions per prompt with rewards R:

    A_i          = (R_i - mean_G R) / (std_G R + eps)          std: unbiased (Bessel), as TRL
    ρ_t          = exp(logp_t - logp_old_t)
    loss_t       = -min(ρ_t A, clip(ρ_t, 1-ε, 1+ε) A) + β KL_t
    d_t          = clamp(ref_t - logp_t, -10, 10)                 (as the reference code)
    KL_t (k3)    = exp(d_t) - d_t - 1                  (≥ 0; estimates KL(π‖π_ref))

and the normalisation `loss_type`:

    "sequence"   loss = mean_i ( Σ_t mask_it·loss_it / Σ_t mask_it )     (default)
    "token"      loss = Σ_it mask_it·loss_it / Σ_it mask_it

"sequence" is a mean over each completion's tokens, then over completions (Video-R1's and
VideoCFR's trainers; every completion weighs the same, so a token of a short completion weighs
more). "token" averages over all completion tokens of the batch (TRL 0.16's GRPOTrainer; every
token weighs the same). With one update per batch, logp_old = logp.detach() (pass `old_logp=None`)
and ρ = 1 in value but its gradient is still ∇logp; with more updates, pass the log-probs of the
policy that generated the batch.

Left out on purpose: entropy bonus, asymmetric clipping (ε_low ≠ ε_high), DAPO/Dr.GRPO token
normalisations, reward scaling other than the group std, importance sampling for vLLM rollouts.
"""

from __future__ import annotations

import torch

LOSS_TYPES = ("sequence", "token")
KL_LOG_RATIO_CLAMP = 10.0  # |log π_ref - log π| is clamped to this before the k3 estimate


def group_advantages(
    rewards: torch.Tensor, group_size: int, eps: float = 1e-4
) -> torch.Tensor:
    """A_i = (R_i - mean_G R) / (std_G R + eps) within each group of `group_size` completions.

    Args:
        rewards: float [B*G], total rewards ordered prompt-major (a prompt's G completions are
            consecutive).
        group_size: G (>= 2; std over one completion is undefined).
        eps: added to the std (1e-4 in METHOD), so a group with equal rewards gets A = 0.

    Returns:
        float32 [B*G] advantages.

    Raises:
        ValueError: G < 2, len(rewards) not a multiple of G, or a reward is NaN/inf (combine
            None rewards before: a reward that does not apply is left out of the sum, not NaN).
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (std of one completion), got {group_size}")
    r = torch.as_tensor(rewards).float().reshape(-1)
    if r.numel() % group_size:
        raise ValueError(
            f"{r.numel()} rewards are not a whole number of groups of {group_size}; "
            "generate num_generations completions per prompt"
        )
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN/inf; sum reward parts with None treated as absent")
    grouped = r.view(-1, group_size)  # (B, G)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)  # unbiased
    return ((grouped - mean) / (std + eps)).reshape(-1)


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] without materialising the full [.., V] log-softmax.

    For float32/64, logsumexp row by row (peak memory one [T, V] row block instead of
    [B, T, V]); half types (bf16 logits of a bf16 policy) are upcast one row at a time, so the
    [B, T, V] logits are never copied to float32 whole and the log-probs (and the ratio
    exp(logp - logp_old) built from them) keep float32 precision.

    Args:
        logits: float [B, T, V].
        index: int64 [B, T], token ids.

    Returns:
        [B, T] log-probabilities: dtype of `logits` for float32/64, float32 for half types.
    """
    if logits.shape[:-1] != index.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and index {tuple(index.shape)} disagree; shift them "
            "first: logits[:, :-1] predict input_ids[:, 1:]"
        )
    if logits.dtype in (torch.float32, torch.float64):
        selected = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)  # (B, T)
        lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])  # (B, T)
        return selected - lse
    out = []
    for row_logits, row_ids in zip(logits, index):
        row_logps = torch.log_softmax(row_logits.float(), dim=-1)  # (T, V), one row in fp32
        out.append(row_logps.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1))
    return torch.stack(out)


def grpo_loss(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    epsilon: float = 0.2,
    beta: float = 0.04,
    loss_type: str = "sequence",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level clipped GRPO loss with a k3 KL penalty (see the module docstring).

    Args:
        logp: float [N, C], log π_θ of the completion tokens (with grad).
        advantages: float [N], one per completion.
        completion_mask: [N, C], 1 for completion tokens up to and including EOS, 0 after.
        old_logp: float [N, C], log π_old of the policy that sampled the batch; None means
            one update per batch (logp.detach(), so ρ = 1).
        ref_logp: float [N, C], log π_ref; required when beta > 0, ignored when beta == 0.
        epsilon: clip range ε (> 0).
        beta: KL coefficient β (>= 0).
        loss_type: "sequence" (mean per completion, then over completions; Video-R1) or
            "token" (sum over all completion tokens / their number; TRL 0.16).

    Returns:
        (loss, metrics): loss is a scalar tensor; metrics (python floats, over completion
        tokens): "kl" (token mean k3, 0 when beta == 0 and no reference), "clip_ratio/low_mean"
        and "clip_ratio/high_mean" (fraction of tokens where the clipped term is the active one,
        ρ < 1-ε with A < 0, resp. ρ > 1+ε with A > 0), "clip_ratio/region_mean" (ρ outside
        [1-ε, 1+ε]), "ratio_mean", "completion_length" (mean tokens per completion).
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type {loss_type!r} unknown; use one of {LOSS_TYPES}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (log-probs of the reference model); "
                         "set beta: 0 to train without a reference model")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("completion_mask",
                                                                      completion_mask)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(logp.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [N] = [{logp.shape[0]}], got "
                         f"{tuple(advantages.shape)}")

    mask = completion_mask.to(logp.dtype)  # (N, C)
    old = logp.detach() if old_logp is None else old_logp
    adv = advantages.to(logp.dtype).unsqueeze(1)  # (N, 1)
    ratio = torch.exp(logp - old)  # (N, C)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (N, C)
    kl = None
    if ref_logp is not None:
        delta = torch.clamp(ref_logp - logp, -KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
        kl = torch.exp(delta) - delta - 1  # (N, C), k3
        if beta > 0:
            per_token = per_token + beta * kl
    lengths = mask.sum(dim=1)  # (N,)
    if loss_type == "sequence":
        loss = ((per_token * mask).sum(dim=1) / lengths.clamp(min=1)).mean()
    else:
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)

    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1)

        def token_mean(x: torch.Tensor) -> float:
            return float((x.to(mask.dtype) * mask).sum() / n_tok)

        low = (ratio < 1 - epsilon) & (adv < 0)
        high = (ratio > 1 + epsilon) & (adv > 0)
        metrics = {
            "kl": token_mean(kl) if kl is not None else 0.0,
            "clip_ratio/low_mean": token_mean(low),
            "clip_ratio/high_mean": token_mean(high),
            "clip_ratio/region_mean": token_mean((ratio < 1 - epsilon) | (ratio > 1 + epsilon)),
            "ratio_mean": token_mean(ratio),
            "completion_length": float(lengths.mean()),
        }
    return loss, metrics
