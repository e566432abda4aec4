"""Rollout engines and the vision tower once per prompt, against today's paths (tiny model, fp32).

- vision once: log-probs, last-layer hidden states, α, the GRPO loss and every parameter's
  gradient equal the forward in which each of the B·G rows runs the tower on its own copy;
- shared prefill: greedy completions equal HF generate's; the first-token logits equal
  generate's; seeded sampling equals a plain reference loop (no cache, full forward per token,
  sampling written out by hand);
- bad input: errors that name the engine and the setting to change.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from videocfr.train import engines, qwen_vl
from videocfr.train.config import TrainConfig
from videocfr.train.engines import Sampling, make_engine
from videocfr.train.grpo import grpo_loss
from videocfr.train.rollout import build_rollout, eos_token_ids, forward_inputs, policy_forward
from videocfr.vlm.alpha import frame_usage, video_group_spans
from videocfr.vlm.tiny import tiny_model_and_processor

G = 3
REL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    """The tiny model with sharp attention: at its random init q·k is ~0, attention is uniform
    and position ids change nothing; scaled q/k projections make every position count."""
    model, processor = tiny_model_and_processor(seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(12.0)
    return model, processor


def test_positions_matter_in_the_fixture(tiny):
    # Control for the tests below: shifting the completion's positions changes the logits.
    model, processor = tiny
    prompts = prompts_of(processor)
    logits, cache, mask, last = engines.prefill(model, prompts, 1)
    tok = logits.argmax(-1, keepdim=True)
    mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    outs = []
    for shift in (1, 2):
        c = copy.deepcopy(cache)
        with torch.no_grad():
            outs.append(model(input_ids=tok, attention_mask=mask, position_ids=last + shift,
                              cache=c, use_cache=True).logits[:, -1])
    assert (outs[0] - outs[1]).abs().max() > 1e-2


def prompts_of(processor, sizes=((56, 84), (56, 56)), seed=0):
    """B = len(sizes) prompts of different lengths and video grids (left padded)."""
    rng = np.random.default_rng(seed)
    texts, videos = [], []
    for i, (h, w) in enumerate(sizes):
        msg = [{"role": "user", "content": [{"type": "video"},
                                            {"type": "text", "text": "Which? " * (1 + 2 * i)}]}]
        texts.append(processor.apply_chat_template(msg, add_generation_prompt=True,
                                                   tokenize=False))
        videos.append(rng.integers(0, 255, (4, h, w, 3), dtype=np.uint8))
    return processor(text=texts, videos=videos, return_tensors="pt", padding=True)


def sampled(model, processor, prompts, seed=0, n=10, engine="shared_prefill"):
    gen = torch.Generator().manual_seed(seed)
    return make_engine(engine).rollout(model, processor, prompts, num_generations=G,
                                       sampling=Sampling(n, temperature=0.9, top_p=0.95),
                                       generator=gen if engine == "shared_prefill" else None)


def assert_rel(a, b, what):
    scale = b.abs().max().clamp_min(1e-12)
    err = (a - b).abs().max() / scale
    assert err <= REL, f"{what}: relative difference {err.item():.2e} > {REL}"


# --- vision once ---------------------------------------------------------------------------


def step_of(model, rollout, vision_once):
    """logp, hidden, α, loss and every gradient of one GRPO loss on the rollout."""
    model.zero_grad(set_to_none=True)
    logp, hidden = policy_forward(model, rollout, 0.9, hidden_states=True,
                                  vision_once=vision_once)
    spans = video_group_spans(rollout.inputs["input_ids"], rollout.row_grid,
                              model.config.video_token_id)
    alphas = frame_usage(hidden, spans, rollout.completion_mask, tau=0.5)
    adv = torch.linspace(-1, 1, logp.shape[0])
    ref = logp.detach() - 0.05  # a reference that differs, so the KL term has a gradient
    loss, _ = grpo_loss(logp, adv, rollout.completion_mask, old_logp=logp.detach() + 0.01,
                        ref_logp=ref, epsilon=0.2, beta=0.04, loss_type="sequence")
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), hidden.detach(), torch.stack(alphas), loss.detach(), grads


def test_vision_once_equals_the_per_row_forward(tiny):
    model, processor = tiny
    prompts = prompts_of(processor)
    rollout = sampled(model, processor, prompts)
    model.train()
    old = step_of(model, rollout, vision_once=False)
    new = step_of(model, rollout, vision_once=True)
    model.eval()
    for name, a, b in zip(("logp", "hidden", "alpha", "loss"), new[:4], old[:4]):
        assert_rel(a, b, name)
    assert new[4].keys() == old[4].keys() == {n for n, _ in model.named_parameters()}
    for name in old[4]:
        assert_rel(new[4][name], old[4][name], f"grad {name}")
    vision = [n for n in old[4] if n.startswith("model.visual.")]
    assert vision and all(old[4][n].abs().sum() > 0 for n in vision)  # the tower is trained


def test_vision_once_gives_each_row_its_own_prompts_video(tiny):
    # Control: same-size videos of different content; feeding rows the other prompt's
    # embeddings must change the log-probs (the index, not only the count, is used).
    model, processor = tiny
    prompts = prompts_of(processor, sizes=((56, 56), (56, 56)))
    rollout = sampled(model, processor, prompts)
    right = policy_forward(model, rollout, 1.0)[0]
    rollout.videos["pixel_values_videos"] = torch.cat(
        rollout.videos["pixel_values_videos"].chunk(2)[::-1])
    swapped = policy_forward(model, rollout, 1.0)[0]
    assert (right - swapped).abs().max() > 1e-3


def test_vision_once_needs_precomputed_vision_outputs(tiny):
    model, processor = tiny
    rollout = sampled(model, processor, prompts_of(processor))

    class NoPrecomputed(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, pixel_values_videos=None):
            raise AssertionError("must not be called")

    with pytest.raises(ValueError, match="rollout.vision_once: false"):
        forward_inputs(NoPrecomputed(), rollout, vision_once=True)
    with pytest.raises(ValueError, match="shared_prefill.*rollout.engine: generate"):
        make_engine("shared_prefill").rollout(NoPrecomputed(), processor, prompts_of(processor),
                                              num_generations=G, sampling=Sampling(4))


# --- shared prefill --------------------------------------------------------------------------


def test_greedy_shared_prefill_equals_generate(tiny):
    model, processor = tiny
    prompts = prompts_of(processor)
    greedy = Sampling(12, do_sample=False)
    ref = make_engine("generate").rollout(model, processor, prompts, num_generations=1,
                                          sampling=greedy)
    got = make_engine("shared_prefill").rollout(model, processor, prompts, num_generations=G,
                                                sampling=greedy)
    assert torch.equal(got.completion_ids, ref.completion_ids.repeat_interleave(G, dim=0))
    assert got.completions == [c for c in ref.completions for _ in range(G)]
    assert torch.equal(got.inputs["attention_mask"], ref.inputs["attention_mask"]
                       .repeat_interleave(G, dim=0))


def test_first_token_logits_equal_generate(tiny):
    model, processor = tiny
    prompts = prompts_of(processor)
    out = model.generate(**prompts, do_sample=True, temperature=0.9, top_p=0.95, top_k=0,
                         num_return_sequences=G, max_new_tokens=1, output_logits=True,
                         return_dict_in_generate=True)
    logits, cache, mask, last = engines.prefill(model, prompts, G)
    assert logits.shape == out.logits[0].shape
    assert_rel(logits, out.logits[0].float(), "first-token logits")
    assert cache.get_seq_length() == prompts["input_ids"].shape[1]
    assert mask.shape[0] == last.shape[1] == 2 * G


def reference_loop(model, processor, prompts, seed, n, temperature, top_p):
    """Sampling written out: full forward (tower per row, no cache) per token, then
    logits / T, the vision ids at -inf, the smallest top-p nucleus, one multinomial draw."""
    gen = torch.Generator().manual_seed(seed)
    ids = prompts["input_ids"].repeat_interleave(G, dim=0)
    P = ids.shape[1]
    eos = eos_token_ids(model, processor.tokenizer)
    index = torch.arange(ids.shape[0] // G).repeat_interleave(G)
    videos = qwen_vl.repeat_pixels(prompts, index)
    alive = torch.ones(ids.shape[0], dtype=torch.bool)
    for _ in range(n):
        mask = torch.cat([prompts["attention_mask"].repeat_interleave(G, dim=0),
                          torch.ones(ids.shape[0], ids.shape[1] - P, dtype=torch.long)], dim=1)
        types = torch.cat([prompts["mm_token_type_ids"].repeat_interleave(G, dim=0),
                           torch.zeros(ids.shape[0], ids.shape[1] - P, dtype=torch.long)], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
                           **videos).logits[:, -1].float()
        logits[:, qwen_vl.vision_token_ids(model.config)] = -float("inf")
        probs = torch.softmax(logits / temperature, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # mass before the token already >= p
        probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
        tok = torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=gen)[:, 0]
        tok = torch.where(alive, tok, torch.full_like(tok, processor.tokenizer.pad_token_id))
        ids = torch.cat([ids, tok[:, None]], dim=1)
        alive &= ~torch.isin(tok, torch.tensor(eos))
        if not alive.any():
            break
    return ids[:, P:]


@pytest.mark.parametrize("seed", [0, 1])
def test_seeded_sampling_equals_a_reference_loop(tiny, seed):
    model, processor = tiny
    prompts = prompts_of(processor)
    got = sampled(model, processor, prompts, seed=seed, n=10)
    want = reference_loop(model, processor, prompts, seed, 10, 0.9, 0.95)
    assert torch.equal(got.completion_ids, want)
    assert len(set(map(tuple, got.completion_ids.tolist()))) > 1  # G different samples


def test_shared_prefill_samples_generates_distribution(tiny):
    # Same first-token distribution as generate, measured: 600 draws each of the first token
    # of one prompt; the total-variation distance between the two empirical histograms stays
    # below what two samples of one distribution show (bound from the multinomial's spread).
    model, processor = tiny
    prompts = prompts_of(processor, sizes=((56, 56),))
    n = 600
    torch.manual_seed(0)
    a = model.generate(**prompts, do_sample=True, temperature=1.0, top_k=0,
                       num_return_sequences=n, max_new_tokens=1,
                       suppress_tokens=qwen_vl.vision_token_ids(model.config))
    first_a = a[:, -1]
    gen = torch.Generator().manual_seed(1)
    b = make_engine("shared_prefill").rollout(model, processor, prompts, num_generations=n,
                                              sampling=Sampling(1), generator=gen)
    first_b = b.completion_ids[:, 0]
    V = model.config.text_config.vocab_size
    ha = torch.bincount(first_a, minlength=V).float() / n
    hb = torch.bincount(first_b, minlength=V).float() / n
    logits = engines.prefill(model, prompts, 1)[0][0]
    logits[qwen_vl.vision_token_ids(model.config)] = -float("inf")
    p = torch.softmax(logits, -1)
    tv = 0.5 * (ha - hb).abs().sum().item()
    tv_a = 0.5 * (ha - p).abs().sum().item()
    tv_b = 0.5 * (hb - p).abs().sum().item()
    # E[TV(sample, p)] <= 0.5 Σ sqrt(p(1-p)/n); both engines sit at that spread, not above it
    bound = 0.5 * torch.sqrt(p * (1 - p) / n).sum().item()
    assert tv_a < 1.5 * bound and tv_b < 1.5 * bound, (tv_a, tv_b, bound)
    assert tv < 3 * bound


# --- bad input -------------------------------------------------------------------------------


def test_cache_that_does_not_expand_is_an_error(tiny, monkeypatch):
    model, processor = tiny
    prompts = prompts_of(processor)
    from transformers import DynamicCache

    monkeypatch.setattr(DynamicCache, "batch_repeat_interleave", lambda self, r: None)
    with pytest.raises(ValueError, match="shared_prefill.*rollout.engine: generate"):
        sampled(model, processor, prompts)


def test_engine_prompt_ids_must_equal_the_trainers(tiny):
    model, processor = tiny
    prompts = prompts_of(processor)
    rollout = sampled(model, processor, prompts)
    sequences = rollout.inputs["input_ids"].clone()
    sequences[0, -rollout.completion_length - 1] += 1  # the prompt's last token changed
    eos = eos_token_ids(model, processor.tokenizer)
    with pytest.raises(ValueError, match="vllm.*prompt ids.*rollout.engine: generate"):
        build_rollout(prompts, sequences, G, eos, processor.tokenizer, "vllm")


def test_unsupported_generation_config_is_an_error(tiny, monkeypatch):
    model, processor = tiny
    monkeypatch.setattr(model.generation_config, "no_repeat_ngram_size", 3)
    with pytest.raises(ValueError, match="no_repeat_ngram_size.*rollout.engine: generate"):
        sampled(model, processor, prompts_of(processor))


def test_repetition_penalty_is_applied_as_generate_does(tiny, monkeypatch):
    model, processor = tiny
    prompts = prompts_of(processor)
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.5)
    greedy = Sampling(12, do_sample=False)
    ref = make_engine("generate").rollout(model, processor, prompts, num_generations=1,
                                          sampling=greedy)
    got = make_engine("shared_prefill").rollout(model, processor, prompts, num_generations=G,
                                                sampling=greedy)
    assert torch.equal(got.completion_ids, ref.completion_ids.repeat_interleave(G, dim=0))
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.0)
    plain = make_engine("generate").rollout(model, processor, prompts, num_generations=1,
                                            sampling=greedy)
    assert not torch.equal(plain.completion_ids, ref.completion_ids)  # the penalty acts


def test_unknown_engine_lists_the_registry():
    with pytest.raises(ValueError, match=r"\['generate', 'shared_prefill'\]"):
        TrainConfig.from_dict({"rollout": {"engine": "vllm"}})
