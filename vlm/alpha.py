"""The model's frame usage α (METHOD.md §4), from the policy forward pass's hidden states.

Qwen2.5-VL merges frames (2g, 2g+1) into temporal group g; a video of grid (t, h, w) (in patches)
is placed in the prompt as `<|vision_start|>` then t·h·w/merge² `<|video_pad|>` tokens (t-major:
group g is the g-th run of h·w/merge² tokens) then `<|vision_end|>`. For each sample:

    F_g     = max over the group's tokens of H                 (sparse aggregation, [G, D])
    a_{i,g} = softmax_g( cos(H_i, F_g) / τ )                   for each answer token i
    α_g     = mean over answer tokens i of a_{i,g}             (float32 [G], sums to 1)

H is the last layer's hidden states of the same forward pass that gives the policy log-probs
(`output_hidden_states=True`), so α costs no extra forward. α is a reward, not a loss term: it is
computed under `torch.no_grad()` on detached states. The prior over K frames is aligned to
groups by `group_prior` (p_g = p_2g + p_2g+1); a length mismatch is an error, never a truncation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

Span = tuple[int, int]  # [start, end) positions in the sequence, end exclusive


def video_group_spans(
    input_ids: torch.Tensor,
    video_grid_thw: torch.Tensor | None,
    video_token_id: int,
    merge_size: int = 2,
    family=None,
) -> list[list[list[Span]]]:
    """Token spans of every temporal group of every video, per sample.

    The layout is the model family's (`vlm.families`): Qwen2.5-VL places a video as one run of
    t·h·w/merge² `<|video_pad|>` tokens (group g is its g-th slice of h·w/merge²); Qwen3-VL and
    Qwen3.5 place each temporal group in its own `<t seconds><|vision_start|>` block. Videos are
    matched to `video_grid_thw` rows in reading order (sample 0's videos first).

    Args:
        input_ids: int64 [B, T]: prompt ids, or prompt + completion sequences.
        video_grid_thw: int64 [V, 3], (t, h, w) per video in patches; None when no video.
        video_token_id: id of `<|video_pad|>` (`model.config.video_token_id`).
        merge_size: `spatial_merge_size` of the vision tower (2 for every registered family).
        family: a `vlm.families.ModelFamily` (default: Qwen2.5-VL's).

    Returns:
        spans[b][v] = [(start_g, end_g) for g in range(t)] (end exclusive), all of h·w/merge².

    Raises:
        ValueError: the runs of video tokens found differ from those the grid and the family's
            layout expect (naming the family and both counts), or a run has the wrong length.
    """
    if family is None:
        from .families import family_named  # noqa: PLC0415

        family = family_named("qwen2_5_vl")
    return family.group_spans(input_ids, video_grid_thw, video_token_id, merge_size)


@torch.no_grad()
def frame_usage(
    hidden: torch.Tensor,
    spans: list[list[list[Span]]],
    completion_mask: torch.Tensor,
    tau: float = 0.1,
) -> list[torch.Tensor | None]:
    """α per sample: the answer tokens' soft attention over temporal groups (METHOD §4).

    Cost: per sample, one max over its visual tokens (a view, no copy) and an [A, G] matrix of
    cosines; no forward pass. Computed on detached states in float32.

    Args:
        hidden: float [B, T, D], last-layer hidden states of the policy forward pass
            (`outputs.hidden_states[-1]`, which in transformers is after the final RMSNorm).
        spans: `video_group_spans(...)` for the same input_ids.
        completion_mask: [B, T] (bool/int/float; nonzero = answer token), aligned with `hidden`;
            or [B, C] with C <= T, taken as the mask of the LAST C positions (TRL's
            `completion_mask` when prompt and completion are concatenated without a gap).
        tau: softmax temperature τ_α (> 0).

    Returns:
        alpha[b]: float32 [G_b] on `hidden`'s device, non-negative, sums to 1; None for a sample
        with no video (image or text only) or with no answer token.

    Raises:
        ValueError: a sample has more than one video (the cached prior is per video), shapes
            disagree, or tau <= 0.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, D], got shape {tuple(hidden.shape)}")
    B, T, _ = hidden.shape
    if len(spans) != B:
        raise ValueError(f"spans has {len(spans)} samples but hidden has batch size {B}")
    mask = completion_mask
    if mask.dim() != 2 or mask.shape[0] != B or mask.shape[1] > T:
        raise ValueError(
            f"completion_mask must be [B, T] = [{B}, {T}] or [B, C<=T] (last C positions), got "
            f"{tuple(mask.shape)}"
        )
    if mask.shape[1] < T:  # right-aligned completion mask: left-pad with zeros
        mask = torch.nn.functional.pad(mask, (T - mask.shape[1], 0))
    mask = mask.to(device=hidden.device) != 0  # (B, T)
    hidden = hidden.detach()

    alphas: list[torch.Tensor | None] = []
    for b in range(B):
        if len(spans[b]) == 0:
            alphas.append(None)
            continue
        if len(spans[b]) > 1:
            raise ValueError(
                f"sample {b} has {len(spans[b])} videos; frame usage needs one video per sample "
                "(the prior is per (video, question))"
            )
        groups = spans[b][0]
        G = len(groups)
        n = groups[0][1] - groups[0][0]
        if n <= 0 or any(e - s != n for s, e in groups):
            raise ValueError(
                f"sample {b}: group spans {groups} are not runs of equal length; build them "
                "with the model family's group_spans"
            )
        answer = hidden[b][mask[b]]  # (A, D), a copy of only the answer tokens
        if answer.shape[0] == 0:
            alphas.append(None)
            continue
        # Max in the native dtype is exact; cast the small results to float32.
        start, end = groups[0][0], groups[-1][1]
        if all(s == start + g * n for g, (s, _) in enumerate(groups)):  # one block: a view
            feats = hidden[b, start:end].view(G, n, -1).amax(dim=1).float()  # (G, D)
        else:  # one block per group (timestamps between groups)
            feats = torch.stack([hidden[b, s:e].amax(dim=0) for s, e in groups]).float()
        cos = torch.nn.functional.normalize(answer.float(), dim=-1) @ torch.nn.functional.normalize(
            feats, dim=-1
        ).T  # (A, G)
        alphas.append(torch.softmax(cos / tau, dim=-1).mean(dim=0))  # (G,)
    return alphas


def group_prior(p: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Align a per-frame prior to Qwen's temporal groups: p_g = p_2g + p_2g+1.

    Args:
        p: float [K] (K even), the cached consensus prior (numpy or torch).

    Returns:
        float32 [K/2], same kind (numpy / torch) as the input.

    Raises:
        ValueError: p is not 1-D or K is odd.
    """
    if p.ndim != 1 or p.shape[0] % 2:
        raise ValueError(
            f"prior must be 1-D with an even number of frames K, got shape {tuple(p.shape)}; "
            "Qwen2.5-VL merges frame pairs, so precompute must sample an even K"
        )
    if isinstance(p, torch.Tensor):
        return p.float().view(-1, 2).sum(dim=1)
    return np.asarray(p, dtype=np.float32).reshape(-1, 2).sum(axis=1)


def alpha_entropy(alpha: torch.Tensor | np.ndarray) -> float:
    """Entropy of α in nats (focus dispersion; 0 = one group, log G = uniform).

    Args:
        alpha: float [G], a distribution.

    Returns:
        float, -Σ α_g log α_g (0·log 0 = 0).
    """
    a = np.asarray(alpha.detach().cpu() if isinstance(alpha, torch.Tensor) else alpha, np.float64)
    a = a[a > 0]
    return float(-(a * np.log(a)).sum()) if a.size else math.nan
