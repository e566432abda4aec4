"""What the rollouts and the policy forward need to know of Qwen2.5-VL, in one place.

- `video_outputs`: the vision tower on the B prompts' videos, once; `expand_video_outputs`
  repeats its per-video embeddings to the B·G rows of the groups. The model's forward takes them
  as `mm_encoder_outputs={"video": ...}` (transformers >= 5) and does the rest itself: it places
  them at the `<|video_pad|>` tokens of each row and computes that row's 3-D mRoPE position ids
  from input_ids, mm_token_type_ids and video_grid_thw, exactly as it does from pixel values.
  The G rows of a prompt index the same embedding tensor, so autograd sums their G gradients
  into the one vision-tower pass.
- `prompt_position_ids`: the position ids `generate` gives a prompt, [text; t; h; w] int64
  [4, B, P] (the model's own `get_rope_index`), and `next_position_ids` for each new token; the
  shared prefill passes them explicitly, so no state is left in the model (`rope_deltas`).
- `vision_token_ids`: the placeholders a completion must never hold.

Where a video's temporal groups sit in a prompt (α) is `vlm.alpha.video_group_spans`.
Another family (Qwen3-VL: deepstack features in the vision output) changes these functions only.
"""

from __future__ import annotations

import inspect

import torch

VISION_TOKEN_FIELDS = ("video_token_id", "image_token_id", "vision_start_token_id",
                       "vision_end_token_id")


def unwrap(model):
    """The Hugging Face model inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def vision_token_ids(config) -> list[int]:
    """The vision placeholder ids of a Qwen2.5-VL config (suppressed in every completion)."""
    return [t for t in (getattr(config, n, None) for n in VISION_TOKEN_FIELDS) if t is not None]


def check_precomputed_vision(model, setting: str, fix: str) -> None:
    """Raise unless the model's forward takes precomputed vision outputs and explicit positions.

    Args:
        model: the policy or reference (a DeepSpeed engine is unwrapped).
        setting: the config setting that asked for it (named in the error).
        fix: the setting that turns it off (named in the error).

    Raises:
        ValueError: the forward has no `mm_encoder_outputs` / `position_ids` parameter, or the
            model has no `get_video_features`.
    """
    module = unwrap(model)
    params = inspect.signature(module.forward).parameters
    missing = [p for p in ("mm_encoder_outputs", "position_ids", "input_ids") if p not in params]
    if missing or not hasattr(module, "get_video_features"):
        what = f"forward has no {missing} parameter" if missing else "has no get_video_features"
        raise ValueError(f"{setting}: {type(module).__name__} {what}, so the vision tower's "
                         f"output cannot be shared by a prompt's rows; set {fix}")


def check_cached_decode(model, setting: str, fix: str) -> None:
    """Raise unless the model's forward takes explicit position ids and a KV cache (`cache`).

    Raises:
        ValueError: naming the setting and the fix.
    """
    module = unwrap(model)
    params = inspect.signature(module.forward).parameters
    missing = [p for p in ("position_ids", "cache", "logits_to_keep") if p not in params]
    if missing:
        raise ValueError(f"{setting}: {type(module).__name__}.forward has no {missing} "
                         f"parameter, so its prefill cannot be shared by explicit positions "
                         f"and a KV cache (transformers >= 5 names it `cache`); set {fix}")


def video_outputs(model, videos: dict[str, torch.Tensor]):
    """The vision tower on each prompt's video, once.

    Args:
        model: the policy or reference (a DeepSpeed engine is unwrapped; under ZeRO-3 the
            vision tower's own hooks gather its parameters).
        videos: pixel_values_videos float [Σ_b t_b·h_b·w_b, D_patch], video_grid_thw int64
            [B, 3] (the processor output of B prompts with one video each).

    Returns:
        the model's video output; `.pooler_output` is a tuple of B float tensors
        [t_b·h_b·w_b / merge², D] (with grad when the model is trained).
    """
    return unwrap(model).get_video_features(videos["pixel_values_videos"],
                                            videos["video_grid_thw"], return_dict=True)


def expand_video_outputs(outputs, index: torch.Tensor):
    """The video output of B prompts laid out for the rows `index` (B·G of them).

    Args:
        outputs: `video_outputs(...)`.
        index: int64 [N], the prompt (0..B-1) of each row.

    Returns:
        an output of the same class whose pooler_output holds N tensors: row r's is prompt
        index[r]'s tensor itself (no copy), so the G gradients add up in it.
    """
    rows = index.tolist()
    feats = outputs.pooler_output
    return type(outputs)(pooler_output=tuple(feats[i] for i in rows))


def row_videos(videos: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-row video metadata (grid, seconds per grid) for the rows `index`, no pixels.

    Returns:
        video_grid_thw int64 [N, 3], second_per_grid_ts [N] (when the prompts have it).
    """
    idx = index.to(videos["video_grid_thw"].device)
    out = {"video_grid_thw": videos["video_grid_thw"][idx]}
    if "second_per_grid_ts" in videos:
        ts = torch.as_tensor(videos["second_per_grid_ts"])
        out["second_per_grid_ts"] = ts[idx.to(ts.device)]
    return out


def repeat_pixels(videos: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every row's own copy of its prompt's video (the path that runs the tower per row).

    Returns:
        pixel_values_videos [Σ_rows t·h·w, D_patch] plus `row_videos(videos, index)`.
    """
    counts = videos["video_grid_thw"].prod(dim=-1).tolist()
    chunks = torch.split(videos["pixel_values_videos"], counts, dim=0)
    return {"pixel_values_videos": torch.cat([chunks[i] for i in index.tolist()]),
            **row_videos(videos, index)}


def prompt_position_ids(model, prompts) -> torch.Tensor:
    """The position ids generate gives B left-padded prompts: int64 [4, B, P].

    Row 0 is the text position (attention-mask cumsum - 1, 0 on padding: generate's causal-mask
    positions); rows 1-3 are Qwen2.5-VL's 3-D mRoPE (temporal, height, width) from the model's
    `get_rope_index`, so the video's positions follow its grid and seconds per grid.
    """
    mask = prompts["attention_mask"]
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, P)
    if prompts.get("video_grid_thw") is None:
        return text[None].expand(4, -1, -1).clone()
    rope, _ = unwrap(model).model.get_rope_index(
        prompts["input_ids"], mm_token_type_ids=prompts["mm_token_type_ids"],
        video_grid_thw=prompts["video_grid_thw"],
        second_per_grid_ts=prompts.get("second_per_grid_ts"), attention_mask=mask)  # (3, B, P)
    return torch.cat([text[None], rope.to(text.device)], dim=0)


def next_position_ids(last: torch.Tensor) -> torch.Tensor:
    """Positions of the next token after `last` int64 [4, N, 1]: every row + 1, as generate."""
    return last + 1
