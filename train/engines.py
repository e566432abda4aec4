"""Rollout engines: how the G completions of each prompt are sampled (`rollout.engine`).

An engine is one method, `rollout(model, processor, prompts, num_generations, sampling)`, that
returns the `train.rollout.Rollout` the step trains on. Two are built in:

    generate        HF `generate(num_return_sequences=G)`: the prompt prefill runs B·G times
                    (transformers 5.25 encodes each video once and expands the tower's output,
                    `mm_encoder_outputs`; older versions ran the tower B·G times too).
    shared_prefill  one prefill of the B prompts (vision tower included), its KV cache expanded
                    to B·G rows, then the decode loop samples as generate does (the same HF
                    logits processors in the same order, then softmax and multinomial).

Both sample from softmax(logits / temperature) restricted to the top-p nucleus, with the vision
placeholders suppressed and the model's repetition penalty applied, and stop a row at its first
EOS (padding after it). The policy log-probs of the loss are those of that distribution.

A server engine (vLLM, SGLang) is one more class with this method. It must honour:
- exact cached frames: it gets the trainer's `pixel_values_videos` / video grid (the frames the
  cache sampled, processed once), never a re-decode or its own resize;
- prompt ids equal to the trainer's: it returns sequences whose first P columns are the
  trainer's input_ids (`build_rollout` checks it and raises);
- weights synced once per optimizer update: the completions must come from the policy the
  update's old log-probs are computed with (reload before the first rollout after each update);
- vision placeholders suppressed (`qwen_vl.vision_token_ids`), the same EOS ids, temperature,
  top-p and max_new_tokens, and G completions per prompt in prompt-major order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from videocfr.vlm.families import family_of

from . import qwen_vl
from .rollout import Rollout, build_rollout, eos_token_ids, pad_token_id

FIX = "rollout.engine: generate"

# generation_config fields that would add a logits processor the shared prefill does not run,
# with the value that means "off" (HF's defaults).
UNSUPPORTED_GENERATION = {"no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
                          "min_length": (None, 0), "min_new_tokens": (None, 0),
                          "sequence_bias": (None,), "begin_suppress_tokens": (None,),
                          "min_p": (None,), "typical_p": (None, 1.0), "epsilon_cutoff": (None, 0.0),
                          "eta_cutoff": (None, 0.0), "forced_bos_token_id": (None,),
                          "forced_eos_token_id": (None,), "guidance_scale": (None, 1.0),
                          "exponential_decay_length_penalty": (None,), "top_h": (None,),
                          "renormalize_logits": (None, False), "watermarking_config": (None,)}


@dataclass(frozen=True)
class Sampling:
    """How completions are sampled (grpo.max_completion_length, temperature, top_p).

    Args:
        max_new_tokens: cap on completion tokens.
        temperature: logits are divided by it.
        top_p: nucleus mass (1: off).
        do_sample: False decodes greedily (tests; the trainer always samples).
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True


class RolloutEngine(Protocol):
    """Samples G completions per prompt (see the module docstring for what it must honour)."""

    name: str

    def rollout(self, model, processor, prompts, *, num_generations: int, sampling: Sampling,
                synced_gpus: bool = False, generator: torch.Generator | None = None
                ) -> Rollout:
        """Args:
            model: the unwrapped policy (under ZeRO-3 the engine's module).
            processor: its processor (the tokenizer decodes completions).
            prompts: processor output for B prompts (left padded), on the model's device.
            num_generations: G.
            sampling: Sampling.
            synced_gpus: keep ranks stepping together (ZeRO-3 with > 1 rank: every rank must
                join every forward to gather the sharded parameters).
            generator: the random generator of the draws (None: torch's global one, which the
                checkpoints save and restore).

        Returns:
            Rollout, rows prompt-major.
        """
        ...


class GenerateEngine:
    """HF generate with num_return_sequences=G (the prompt prefilled G times; the video
    encoded once on transformers 5.25, G times on older versions)."""

    name = "generate"

    @torch.no_grad()
    def rollout(self, model, processor, prompts, *, num_generations, sampling,
                synced_gpus=False, generator=None):
        if generator is not None:
            raise ValueError("rollout.engine generate: HF generate draws from torch's global "
                             "generator; pass generator=None or use rollout.engine: "
                             "shared_prefill")
        eos = eos_token_ids(model, processor.tokenizer)
        was_training = model.training
        model.eval()
        kwargs = {"do_sample": True, "temperature": sampling.temperature,
                  "top_p": sampling.top_p, "top_k": 0} if sampling.do_sample else \
            {"do_sample": False}
        sequences = model.generate(
            **prompts, **kwargs, num_return_sequences=num_generations,
            max_new_tokens=sampling.max_new_tokens, eos_token_id=eos,
            pad_token_id=pad_token_id(processor.tokenizer, eos), synced_gpus=synced_gpus,
            suppress_tokens=qwen_vl.vision_token_ids(model.config),
        )  # (B*G, P+C)
        model.train(was_training)
        return build_rollout(prompts, sequences, num_generations, eos, processor.tokenizer,
                             self.name)


def logits_processors(model, prompts, sampling: Sampling, num_generations: int
                      ) -> LogitsProcessorList:
    """The processors generate would run for the trainer's sampling, in generate's order, for
    the B*G rows of B prompts (the penalty skips each row's left padding, as generate's does).

    Raises:
        ValueError: the model's generation_config asks for a processor not listed here.
    """
    gen = model.generation_config
    active = [k for k, off in UNSUPPORTED_GENERATION.items() if getattr(gen, k, None) not in off]
    if active:
        raise ValueError(f"rollout.engine shared_prefill: the model's generation_config sets "
                         f"{active}, which it does not apply; clear them or set {FIX}")
    out = LogitsProcessorList()
    penalty = getattr(gen, "repetition_penalty", None)
    if penalty is not None and penalty != 1.0:
        padding = (prompts["attention_mask"] != 0).int().argmax(dim=1)  # (B,)
        padding = padding.repeat_interleave(num_generations)  # (B*G,)
        out.append(RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=padding))
    out.append(SuppressTokensLogitsProcessor(qwen_vl.vision_token_ids(model.config),
                                             device=prompts["input_ids"].device))
    if sampling.do_sample:
        if sampling.temperature != 1.0:
            out.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_p < 1.0:
            out.append(TopPLogitsWarper(sampling.top_p, min_tokens_to_keep=1))
    return out


def expand_cache(cache, repeats: int, rows: int):
    """Repeat each prompt's KV cache rows `repeats` times; check it now has `rows` rows."""
    cache.batch_repeat_interleave(repeats)
    layer = cache.layers[0]
    got = None if getattr(layer, "keys", None) is None else layer.keys.shape[0]
    if got != rows:
        raise ValueError(f"rollout.engine shared_prefill: the expanded KV cache has {got} rows "
                         f"for a batch of {rows}; this cache type ({type(cache).__name__}) does "
                         f"not expand by batch; set {FIX}")
    return cache


def _all_done(done: bool, synced: bool, device) -> bool:
    if not synced:
        return done
    flag = torch.tensor(0.0 if done else 1.0, device=device)
    torch.distributed.all_reduce(flag)  # sum of the ranks still decoding
    return flag.item() == 0.0


@torch.no_grad()
def prefill(module, prompts, num_generations: int):
    """One forward of the B prompts (vision tower included), its cache expanded to B·G rows.

    Returns:
        logits float32 [B*G, V] of the first completion token; the KV cache (B*G rows);
        attention mask int64 [B*G, P]; the prompts' last position ids int64 [4, B*G, 1].
    """
    G = num_generations
    B = prompts["input_ids"].shape[0]
    positions = qwen_vl.prompt_position_ids(module, prompts)  # (4, B, P)
    out = module(**prompts, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = expand_cache(out.cache, G, B * G)
    logits = out.logits[:, -1].float().repeat_interleave(G, dim=0)  # (B*G, V)
    mask = prompts["attention_mask"].repeat_interleave(G, dim=0)  # (B*G, P)
    last = positions[..., -1:].repeat_interleave(G, dim=1)  # (4, B*G, 1)
    return logits, cache, mask, last


class SharedPrefillEngine:
    """One prefill of the B prompts, its KV cache shared by their G completions."""

    name = "shared_prefill"

    @torch.no_grad()
    def rollout(self, model, processor, prompts, *, num_generations, sampling,
                synced_gpus=False, generator=None):
        module = qwen_vl.unwrap(model)
        qwen_vl.check_cached_decode(module, "rollout.engine shared_prefill", FIX)
        family_of(module).check_engine(False, self.name)
        tokenizer = processor.tokenizer
        eos = eos_token_ids(module, tokenizer)
        pad = pad_token_id(tokenizer, eos)
        G = num_generations
        ids = prompts["input_ids"]
        B = ids.shape[0]
        processors = logits_processors(module, prompts, sampling, G)
        eos_t = torch.tensor(eos, device=ids.device)
        was_training = module.training
        module.eval()
        logits, cache, mask, last = prefill(module, prompts, G)
        sequences = ids.repeat_interleave(G, dim=0)  # (B*G, P), grows by one column a token
        unfinished = torch.ones(B * G, dtype=torch.bool, device=ids.device)
        finished = False
        while True:
            if not finished:  # a rank that is done only joins the forwards (synced_gpus)
                scores = processors(sequences, logits)
                if sampling.do_sample:
                    probs = torch.softmax(scores, dim=-1)
                    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                else:
                    tokens = scores.argmax(dim=-1)
                tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad))
                sequences = torch.cat([sequences, tokens[:, None]], dim=1)
                unfinished &= ~torch.isin(tokens, eos_t)
                finished = not bool(unfinished.any()) or \
                    sequences.shape[1] - ids.shape[1] == sampling.max_new_tokens
            if _all_done(finished, synced_gpus, ids.device):
                break
            mask = torch.cat([mask, mask.new_ones(B * G, 1)], dim=1)
            last = qwen_vl.next_position_ids(last)
            out = module(input_ids=sequences[:, -1:], attention_mask=mask, position_ids=last,
                         cache=cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float()
        module.train(was_training)
        return build_rollout(prompts, sequences, G, eos, tokenizer, self.name)


ENGINES: dict[str, type] = {e.name: e for e in (GenerateEngine, SharedPrefillEngine)}


def make_engine(name: str) -> RolloutEngine:
    """The engine registered under `name` (rollout.engine)."""
    if name not in ENGINES:
        raise ValueError(f"rollout.engine {name!r} unknown; use one of {sorted(ENGINES)}")
    return ENGINES[name]()
