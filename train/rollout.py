"""Rollouts: G completions per prompt (train.engines samples them), and the one policy forward.

`policy_forward` runs the single forward pass on prompt + completion that gives both the
completion log-probs (for the loss) and, with `output_hidden_states`, the last layer's hidden
states (for α). Nothing else runs the policy. With `vision_once` the vision tower runs on the B
prompts' videos and its embeddings serve all B·G rows (train.qwen_vl); otherwise every row
carries its own copy of its prompt's video and the tower runs B·G times.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import qwen_vl
from .grpo import selective_log_softmax

FIX_VISION_ONCE = "rollout.vision_once: false"


@dataclass
class Rollout:
    """The completions of one batch, laid out for the policy forward.

    Rows are ordered prompt-major: row b*G + g is completion g of prompt b.

    Args:
        inputs: the full sequences: input_ids / attention_mask / mm_token_type_ids int64
            [B*G, P+C].
        videos: the B prompts' videos, once: pixel_values_videos [Σ_b t_b·h_b·w_b, D_patch],
            video_grid_thw int64 [B, 3], second_per_grid_ts float [B] (when present).
        completion_ids: int64 [B*G, C], tokens after the prompt (padding after EOS).
        completion_mask: float32 [B*G, C], 1 up to and including the first EOS.
        completions: decoded completion texts (special tokens removed), length B*G.
        prompt_index: int64 [B*G], the prompt (0..B-1) of each row.
    """

    inputs: dict[str, torch.Tensor]
    videos: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completions: list[str]
    prompt_index: torch.Tensor

    @property
    def completion_length(self) -> int:
        return int(self.completion_ids.shape[1])

    @property
    def row_grid(self) -> torch.Tensor:
        """int64 [B*G, 3], the video grid of each row."""
        return self.videos["video_grid_thw"][self.prompt_index.to(
            self.videos["video_grid_thw"].device)]


def completion_mask_of(completion_ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """float32 [N, C]: 1 for tokens up to and including the first EOS, 0 after it."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    seen_before = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # an EOS strictly before
    return (~seen_before).float()


def eos_token_ids(model, tokenizer) -> list[int]:
    """All ids that end a completion: the generation config's EOS ids and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model has no EOS token id; set generation_config.eos_token_id")
    return sorted(set(ids))


def pad_token_id(tokenizer, eos: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]


def build_rollout(prompts, sequences: torch.Tensor, num_generations: int, eos: list[int],
                  tokenizer, engine: str) -> Rollout:
    """The Rollout of B prompts from an engine's B*G sequences (prompt ids + completion ids).

    Args:
        prompts: processor output of the B prompts (left padded), as the trainer made it.
        sequences: int64 [B*G, P+C], prompt-major; the first P columns must be the prompts'
            own ids (each repeated G times).
        num_generations: G.
        eos: the ids that end a completion.
        tokenizer: decodes the completions.
        engine: the engine's name (for errors).

    Raises:
        ValueError: the engine's prompt ids differ from the trainer's (the forward would score
            other tokens than were sampled), or it returned no new token.
    """
    G = num_generations
    ids = prompts["input_ids"]
    B, P = ids.shape
    if sequences.dim() != 2 or sequences.shape[0] != B * G or sequences.shape[1] <= P:
        raise ValueError(f"rollout.engine {engine}: returned sequences of shape "
                         f"{tuple(sequences.shape)} for {B} prompts of {P} tokens x G={G}; it "
                         f"must return [B*G, P+C] with C >= 1 (check grpo.max_completion_length) "
                         f"or set rollout.engine: generate")
    if not torch.equal(sequences[:, :P], ids.repeat_interleave(G, dim=0).to(sequences.device)):
        raise ValueError(f"rollout.engine {engine}: the prompt ids it returned differ from the "
                         f"trainer's (another template, tokenizer or truncation); the engine "
                         f"must take the trainer's prompt ids as they are, or set "
                         f"rollout.engine: generate")
    completion_ids = sequences[:, P:]
    completion_mask = completion_mask_of(completion_ids, eos)  # (B*G, C)
    pad = pad_token_id(tokenizer, eos)
    inputs = {
        "input_ids": sequences,
        "attention_mask": torch.cat([prompts["attention_mask"].repeat_interleave(G, dim=0),
                                     completion_mask.long()], dim=1),
        "mm_token_type_ids": torch.cat([prompts["mm_token_type_ids"].repeat_interleave(G, dim=0),
                                        torch.zeros_like(completion_ids)], dim=1),
    }
    videos = {k: prompts[k] for k in ("pixel_values_videos", "video_grid_thw",
                                      "second_per_grid_ts") if k in prompts}
    texts = tokenizer.batch_decode(completion_ids.masked_fill(completion_mask == 0, pad),
                                   skip_special_tokens=True)
    return Rollout(inputs=inputs, videos=videos, completion_ids=completion_ids,
                   completion_mask=completion_mask, completions=texts,
                   prompt_index=torch.arange(B).repeat_interleave(G))


def forward_inputs(model, rollout: Rollout, vision_once: bool) -> dict:
    """The keyword arguments of the policy forward over the rollout's rows.

    vision_once: the vision tower runs here on the B videos (with grad when the model trains)
    and the model gets `mm_encoder_outputs`; otherwise each row carries its prompt's pixels.
    """
    index = rollout.prompt_index
    if not rollout.videos:
        return dict(rollout.inputs)
    if not vision_once:
        return {**rollout.inputs, **qwen_vl.repeat_pixels(rollout.videos, index)}
    qwen_vl.check_precomputed_vision(model, "rollout.vision_once", FIX_VISION_ONCE)
    video = qwen_vl.video_outputs(model, rollout.videos)
    return {**rollout.inputs, **qwen_vl.row_videos(rollout.videos, index),
            "mm_encoder_outputs": {"video": qwen_vl.expand_video_outputs(video, index)}}


def policy_forward(model, rollout: Rollout, temperature: float, hidden_states: bool = False,
                   vision_once: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one forward over prompt + completion.

    Args:
        model: policy or reference model (a DeepSpeed engine is called the same way).
        rollout: the sequences.
        temperature: logits are divided by it, so log-probs are those of the sampling policy.
        hidden_states: also return the last layer's hidden states (for α).
        vision_once: run the vision tower once per prompt (rollout.vision_once).

    Returns:
        logp: float32 [B*G, C], log-probs of the completion tokens.
        hidden: [B*G, P+C, D] last-layer hidden states (None unless asked); not detached.
    """
    C = rollout.completion_length
    out = model(**forward_inputs(model, rollout, vision_once),
                output_hidden_states=hidden_states, logits_to_keep=C + 1, use_cache=False)
    logits = out.logits[:, :-1]  # (B*G, C, V): position t predicts t+1; kept in model dtype
    if temperature != 1.0:
        logits = logits / temperature
    logp = selective_log_softmax(logits, rollout.completion_ids)  # (B*G, C) float32
    return logp, (out.hidden_states[-1] if hidden_states else None)
