"""Rollouts: G sampled completions per prompt, and the one policy forward over them.

`generate_rollouts` samples with HF `generate`; `policy_forward` runs the single forward pass on
prompt + completion that gives both the completion log-probs (for the loss) and, with
`output_hidden_states`, the last layer's hidden states (for α). Nothing else runs the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .grpo import selective_log_softmax


@dataclass
class Rollout:
    """The completions of one batch, laid out for the policy forward.

    Rows are ordered prompt-major: row b*G + g is completion g of prompt b.

    Args:
        inputs: model inputs of the full sequences: input_ids / attention_mask /
            mm_token_type_ids int64 [B*G, P+C], pixel_values_videos (each prompt's patches
            repeated G times), video_grid_thw int64 [B*G, 3], second_per_grid_ts float [B*G].
        completion_ids: int64 [B*G, C], tokens after the prompt (padding after EOS).
        completion_mask: float32 [B*G, C], 1 up to and including the first EOS.
        completions: decoded completion texts (special tokens removed), length B*G.
        prompt_index: int64 [B*G], the prompt (0..B-1) of each row.
    """

    inputs: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completions: list[str]
    prompt_index: torch.Tensor

    @property
    def completion_length(self) -> int:
        return int(self.completion_ids.shape[1])


def repeat_videos(batch, num_generations: int) -> dict[str, torch.Tensor]:
    """Repeat each prompt's video tensors G times, in the row order generate uses.

    Args:
        batch: processor output for B prompts with one video each.
        num_generations: G.

    Returns:
        dict with pixel_values_videos [(Σ_b G·t_b·h_b·w_b), D], video_grid_thw int64 [B*G, 3],
        second_per_grid_ts [B*G] (when present).
    """
    grid = batch["video_grid_thw"]  # (B, 3)
    counts = grid.prod(dim=-1).tolist()
    chunks = torch.split(batch["pixel_values_videos"], counts, dim=0)
    out = {
        "pixel_values_videos": torch.cat([c for c in chunks for _ in range(num_generations)]),
        "video_grid_thw": grid.repeat_interleave(num_generations, dim=0),
    }
    if "second_per_grid_ts" in batch:
        out["second_per_grid_ts"] = torch.as_tensor(batch["second_per_grid_ts"]).repeat_interleave(
            num_generations, dim=0)
    return out


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


@torch.no_grad()
def generate_rollouts(model, processor, batch, *, num_generations: int, max_new_tokens: int,
                      temperature: float, top_p: float, synced_gpus: bool = False) -> Rollout:
    """Sample G completions for every prompt of a batch.

    Args:
        model: the policy (an unwrapped Qwen2.5-VL; under ZeRO-3 the engine's module).
        processor: its processor (the tokenizer decodes completions).
        batch: processor output for B prompts (left padded), on the model's device.
        num_generations: G.
        max_new_tokens: cap on completion tokens.
        temperature, top_p: sampling parameters.
        The vision placeholder tokens are suppressed (a completion never holds a video).
        synced_gpus: keep ranks stepping together (required under ZeRO-3 with > 1 rank: every
            rank must join every forward to gather the sharded parameters).

    Returns:
        Rollout.
    """
    tokenizer = processor.tokenizer
    eos = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    prompt_len = batch["input_ids"].shape[1]
    # A vision placeholder inside a completion would be read as a second video by the forward.
    cfg = model.config
    suppress = [getattr(cfg, n, None) for n in ("video_token_id", "image_token_id",
                                                "vision_start_token_id", "vision_end_token_id")]
    was_training = model.training
    model.eval()
    sequences = model.generate(
        **batch, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
        num_return_sequences=num_generations, max_new_tokens=max_new_tokens,
        eos_token_id=eos, pad_token_id=pad_id, synced_gpus=synced_gpus,
        suppress_tokens=[t for t in suppress if t is not None],
    )  # (B*G, P+C)
    model.train(was_training)
    completion_ids = sequences[:, prompt_len:]
    if completion_ids.shape[1] == 0:
        raise RuntimeError("generate returned no new tokens; check grpo.max_completion_length")
    completion_mask = completion_mask_of(completion_ids, eos)  # (B*G, C)
    G = num_generations
    prompt_mask = batch["attention_mask"].repeat_interleave(G, dim=0)
    mm_types = batch["mm_token_type_ids"].repeat_interleave(G, dim=0)
    inputs = {
        "input_ids": sequences,
        "attention_mask": torch.cat([prompt_mask, completion_mask.long()], dim=1),
        "mm_token_type_ids": torch.cat([mm_types, torch.zeros_like(completion_ids)], dim=1),
        **repeat_videos(batch, G),
    }
    texts = tokenizer.batch_decode(completion_ids.masked_fill(completion_mask == 0, pad_id),
                                   skip_special_tokens=True)
    index = torch.arange(batch["input_ids"].shape[0]).repeat_interleave(G)
    return Rollout(inputs=inputs, completion_ids=completion_ids, completion_mask=completion_mask,
                   completions=texts, prompt_index=index)


def policy_forward(model, rollout: Rollout, temperature: float, hidden_states: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one forward over prompt + completion.

    Args:
        model: policy or reference model (a DeepSpeed engine is called the same way).
        rollout: the sequences.
        temperature: logits are divided by it, so log-probs are those of the sampling policy.
        hidden_states: also return the last layer's hidden states (for α).

    Returns:
        logp: float32 [B*G, C], log-probs of the completion tokens.
        hidden: [B*G, P+C, D] last-layer hidden states (None unless asked); not detached.
    """
    C = rollout.completion_length
    out = model(**rollout.inputs, output_hidden_states=hidden_states, logits_to_keep=C + 1,
                use_cache=False)
    logits = out.logits[:, :-1]  # (B*G, C, V): position t predicts t+1; kept in model dtype
    if temperature != 1.0:
        logits = logits / temperature
    logp = selective_log_softmax(logits, rollout.completion_ids)  # (B*G, C) float32
    return logp, (out.hidden_states[-1] if hidden_states else None)
