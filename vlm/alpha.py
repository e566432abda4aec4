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
) -> list[list[list[Span]]]:
    """Token spans of every temporal group of every video, per sample.

    Videos are matched to `video_grid_thw` rows in reading order (sample 0's videos first), the
    order in which the Qwen2.5-VL processor and model consume them. Each video must appear as one
    contiguous run of `video_token_id` tokens of length t·h·w/merge².

    Args:
        input_ids: int64 [B, T]: the prompt ids (recommended: positions are the same once the
            completion is appended after them) or the full prompt + completion sequences.
        video_grid_thw: int64 [V, 3], (t, h, w) per video in patches, as the processor returns;
            None or empty when the batch has no video.
        video_token_id: id of `<|video_pad|>` (`model.config.video_token_id`).
        merge_size: `spatial_merge_size` of the vision tower (2 for Qwen2.5-VL).

    Returns:
        spans[b][v] = [(start_g, end_g) for g in range(t)]: the positions in sample b of the
        tokens of temporal group g of its v-th video (end exclusive). A sample without video has
        an empty list.

    Raises:
        ValueError: the number of video token runs differs from the number of grid rows, or a
            run's length differs from t·h·w/merge² (the ids and the grid come from different
            processor calls, or the prompt was truncated through a video).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
    grid = (
        torch.zeros(0, 3, dtype=torch.long)
        if video_grid_thw is None
        else torch.as_tensor(video_grid_thw).reshape(-1, 3).long().cpu()
    )
    is_video = (input_ids == video_token_id).to(torch.int8).cpu()  # (B, T)
    # Run boundaries: +1 where a run starts, -1 one past where it ends.
    padded = torch.nn.functional.pad(is_video, (1, 1))
    edges = padded[:, 1:] - padded[:, :-1]  # (B, T+1)
    starts = (edges == 1).nonzero().tolist()  # [[b, start], ...] sorted by (b, start)
    ends = (edges == -1).nonzero()[:, 1].tolist()
    if len(starts) != grid.shape[0]:
        raise ValueError(
            f"found {len(starts)} runs of video tokens (id {video_token_id}) in input_ids but "
            f"video_grid_thw has {grid.shape[0]} rows; pass the input_ids and video_grid_thw of "
            "the same processor call, do not truncate prompts through a video, and pass only the "
            "prompt ids if completions may contain video tokens"
        )
    spans: list[list[list[Span]]] = [[] for _ in range(input_ids.shape[0])]
    per_group_div = merge_size * merge_size
    for v, ((b, start), end) in enumerate(zip(starts, ends)):
        t, h, w = (int(x) for x in grid[v])
        if (h * w) % per_group_div:
            raise ValueError(f"video {v}: grid h·w = {h * w} is not divisible by merge² = "
                             f"{per_group_div}; pass the vision tower's spatial_merge_size")
        n = h * w // per_group_div
        if end - start != t * n:
            raise ValueError(
                f"video {v} (sample {b}): its run has {end - start} video tokens but grid "
                f"(t={t}, h={h}, w={w}) with merge {merge_size} needs {t * n}; pass the "
                "input_ids and video_grid_thw of the same processor call"
            )
        spans[b].append([(start + g * n, start + (g + 1) * n) for g in range(t)])
    return spans


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
        start, end = groups[0][0], groups[-1][1]
        G = len(groups)
        n = (end - start) // G
        if any(e - s != n or s != start + g * n for g, (s, e) in enumerate(groups)):
            raise ValueError(
                f"sample {b}: group spans {groups} are not equal, contiguous runs; build them "
                "with video_group_spans"
            )
        answer = hidden[b][mask[b]]  # (A, D), a copy of only the answer tokens
        if answer.shape[0] == 0:
            alphas.append(None)
            continue
        # Max in the native dtype is exact; cast the small results to float32.
        feats = hidden[b, start:end].view(G, n, -1).amax(dim=1).float()  # (G, D)
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
