"""GRPO for the frame selector (METHOD §7): N sampled subsets per question, one reward each.

One step, top to bottom (`grpo_step`):

1. rollout: each of the B questions is repeated N times and the policy samples n frames per row
   (no gradient: the rollout policy is the "old" policy);
2. reward: a plain callable scores every (question, subset); `None` means "does not apply" and
   drops that question's whole group from the loss (counted, never turned into 0);
3. advantages: A = (r - mean_N r) / (std_N r + 1e-4) within each question's group
   (`train.grpo.group_advantages`, the CF-GRPO trainer's own);
4. update(s): the picks are re-scored teacher-forced with gradients; per pick
   loss_t = -min(ρ_t A, clip(ρ_t, 1-ε, 1+ε) A) with ρ_t = exp(logp_t - logp_old_t), averaged
   over the n picks then over rows, minus `entropy_coef` · mean entropy.

Left out on purpose: the KL term (the entropy bonus replaces it, as in the paper, so no reference
policy is kept), value baselines, reward scaling other than the group std.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from videocfr.train.grpo import group_advantages

from .policy import FrameSelector, SelectorBatch

AdvantageFn = Callable[[torch.Tensor, int], torch.Tensor]


def curriculum_budget(step: int, milestones: Sequence[int], budgets: Sequence[int]) -> int:
    """The budget n at a 0-based step: budgets[i] for the last milestone i with milestone <= step.

    Args:
        step: steps done so far (0 for the first step).
        milestones: ascending steps where each budget starts; the first must be 0.
        budgets: n for each milestone (e.g. 4, 8, 16, 32).
    """
    i = int(np.searchsorted(np.asarray(milestones), step, side="right")) - 1
    return int(budgets[max(i, 0)])


def selector_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                  entropy: torch.Tensor, *, epsilon: float, entropy_coef: float
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped GRPO loss over picks, with an entropy bonus.

    Args:
        logp: float [R, n], log-probs of the picks under the current policy (with grad).
        old_logp: float [R, n], the same under the rollout policy (no grad).
        advantages: float [R], one per row (subset).
        entropy: float [R, n], entropy of each step's distribution (with grad).
        epsilon: clip range of ρ.
        entropy_coef: weight of the entropy bonus.

    Returns:
        (scalar loss, {"clip_frac": ...}).
    """
    ratio = torch.exp(logp - old_logp)  # (R, n)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv
    policy_loss = -torch.minimum(unclipped, clipped).mean(dim=1).mean()
    loss = policy_loss - entropy_coef * entropy.mean()
    clip_frac = ((ratio - 1).abs() > epsilon).float().mean().item()
    return loss, {"clip_frac": clip_frac, "policy_loss": float(policy_loss.detach())}


@dataclass
class StepResult:
    """What one GRPO step produced (for metrics).

    Attributes:
        rewards: float64 [B*N], NaN where the reward did not apply.
        positions: int64 [B*N, n], the sampled subsets (sorted).
        entropy: mean per-step entropy of the rollout.
        loss: the last update's loss (NaN when no group could be used).
        used_groups: questions whose group entered the loss.
        none_groups: questions dropped because a reward returned None.
        stats: other floats (clip_frac, policy_loss).
    """

    rewards: np.ndarray
    positions: np.ndarray
    entropy: float
    loss: float
    used_groups: int
    none_groups: int
    stats: dict


def grpo_step(policy: FrameSelector, optimizer: torch.optim.Optimizer, batch: SelectorBatch,
              reward_fn: Callable[[np.ndarray], Sequence[float | None]], *, n: int,
              num_samples: int, epsilon: float = 0.2, entropy_coef: float = 0.01,
              updates: int = 1, max_grad_norm: float = 1.0,
              generator: torch.Generator | None = None,
              advantage_fn: AdvantageFn = group_advantages) -> StepResult:
    """One rollout + reward + update round on B questions.

    Args:
        policy: the selector (its parameters are in `optimizer`).
        optimizer: e.g. AdamW.
        batch: B questions (every K >= n).
        reward_fn: positions int64 [B*N, n] (rows prompt-major: question b's N subsets are rows
            b*N .. b*N+N-1) -> B*N rewards (float or None). The trainer binds the questions.
        n: frames per subset.
        num_samples: N subsets per question (>= 2).
        epsilon, entropy_coef, updates, max_grad_norm: see SelectorTrainConfig.
        generator: torch RNG of the rollout.
        advantage_fn: (rewards [B*N], N) -> advantages [B*N]; group_advantages by default (tests
            swap it to check that the gradient follows the advantages).
    """
    device = batch.frames.device
    with torch.no_grad():
        sel = policy.sample(batch, n, generator=generator, repeats=num_samples)
    positions = sel.positions.cpu().numpy()
    raw = list(reward_fn(positions))
    if len(raw) != len(positions):
        raise ValueError(f"reward returned {len(raw)} values for {len(positions)} subsets")
    rewards = np.array([np.nan if r is None else float(r) for r in raw], np.float64)
    if np.isinf(rewards).any():
        raise ValueError("reward returned inf; rewards must be finite numbers or None")
    grouped = rewards.reshape(-1, num_samples)
    keep = ~np.isnan(grouped).any(axis=1)  # (B,)
    entropy = float(sel.entropy.mean())
    stats: dict = {}
    loss_value = float("nan")
    if keep.any():
        keep_rows = torch.from_numpy(np.repeat(keep, num_samples)).to(device)
        keep_q = torch.from_numpy(keep).to(device)
        r = torch.from_numpy(grouped[keep].reshape(-1)).float().to(device)
        adv = advantage_fn(r, num_samples).to(device)  # (B_kept*N,)
        sub = SelectorBatch(*(t[keep_q] for t in (batch.frames, batch.times, batch.mask,
                                                  batch.question)))
        order, old_logp = sel.order[keep_rows], sel.logp[keep_rows]
        for _ in range(updates):
            logp, ent = policy.log_prob(sub, order, repeats=num_samples)
            loss, stats = selector_loss(logp, old_logp, adv, ent, epsilon=epsilon,
                                        entropy_coef=entropy_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm > 0:
                stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(policy.parameters(),
                                                                          max_grad_norm))
            optimizer.step()
            loss_value = float(loss.detach())
    return StepResult(rewards=rewards, positions=positions, entropy=entropy, loss=loss_value,
                      used_groups=int(keep.sum()), none_groups=int((~keep).sum()), stats=stats)
