"""The model-family adapters: spans proven on each family's real tiny model, bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from videocfr.vlm.alpha import frame_usage, video_group_spans
from videocfr.vlm.families import FAMILIES, family_for_checkpoint, family_named, family_of
from videocfr.vlm.prompts import chat_messages

NAMES = sorted(FAMILIES)


@pytest.fixture(scope="module", params=NAMES)
def tiny(request):
    family = family_named(request.param)
    model, processor = family.tiny(0)
    return family, model, processor


def _batch(family, processor, videos, seconds):
    texts = [processor.apply_chat_template(chat_messages(q), add_generation_prompt=True,
                                           tokenize=False)
             for q in ("What happens?", "A longer question, ok?")[:len(videos)]]
    meta = [family.video_metadata(len(v), timestamps=ts) for v, ts in zip(videos, seconds)]
    return family.processor_inputs(processor, texts, videos, meta)


def _llm_inputs(model, batch):
    """inputs_embeds and (when the family has DeepStack) the visual features added to them."""
    got = {}

    def hook(module, args, kwargs):
        got["e"] = kwargs["inputs_embeds"].detach().clone()
        deep = kwargs.get("deepstack_visual_embeds")
        got["deep"] = None if deep is None else [d.detach().clone() for d in deep]

    handle = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        handle.remove()
    return got


@pytest.mark.parametrize("num_frames, height, width", [(4, 64, 96), (6, 70, 90)])
def test_group_spans_are_where_the_model_puts_each_frame_pair(tiny, num_frames, height, width):
    """Perturbing frames (2g, 2g+1) changes the LLM's inputs exactly on span g (and, for
    DeepStack, exactly the visual rows of span g), for every family, with left padding."""
    family, model, processor = tiny
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    seconds = [np.cumsum(rng.uniform(0.3, 3.0, num_frames)), np.arange(4.0)]
    batch = _batch(family, processor, [frames, other], seconds)
    grid = batch["video_grid_thw"]
    spans = video_group_spans(batch["input_ids"], grid, model.config.video_token_id, 2, family)
    assert len(spans[0][0]) == num_frames // 2 and len(spans[1][0]) == 2
    n = spans[0][0][0][1] - spans[0][0][0][0]
    assert n > 1  # several tokens per group, so a span of the wrong length cannot pass
    video_pos = (batch["input_ids"] == model.config.video_token_id).nonzero().tolist()
    base = _llm_inputs(model, batch)
    for g, (start, end) in enumerate(spans[0][0]):
        changed = frames.copy()
        changed[2 * g:2 * g + 2] = 255 - changed[2 * g:2 * g + 2]
        got = _llm_inputs(model, _batch(family, processor, [changed, other], seconds))
        where = ((got["e"] - base["e"]).abs().amax(-1) > 1e-6).nonzero().tolist()
        assert where == [[0, t] for t in range(start, end)], f"{family.name} group {g}"
        if base["deep"] is not None:  # rows of the visual tokens in reading order
            rows = ((got["deep"][0] - base["deep"][0]).abs().amax(-1) > 1e-6).nonzero()
            assert [video_pos[r] for r in rows[:, 0].tolist()] == where
    if family.takes_timestamps:  # the prompt carries each group's true seconds
        text = processor.tokenizer.decode(batch["input_ids"][0])
        for g in range(num_frames // 2):
            want = (seconds[0][2 * g] + seconds[0][2 * g + 1]) / 2
            assert f"<{want:.1f} seconds>" in text


def test_alpha_from_the_policy_forward(tiny):
    """α from the same forward's last hidden states: one value per group, a distribution."""
    family, model, processor = tiny
    frames = np.random.default_rng(1).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    batch = _batch(family, processor, [frames], [np.arange(8.0)])
    completion = processor.tokenizer("<think>x</think><answer>A</answer>", return_tensors="pt")
    ids = torch.cat([batch["input_ids"], completion.input_ids], dim=1)
    full = dict(batch, input_ids=ids, attention_mask=torch.ones_like(ids),
                mm_token_type_ids=torch.nn.functional.pad(batch["mm_token_type_ids"],
                                                          (0, completion.input_ids.shape[1])))
    with torch.no_grad():
        out = model(**full, output_hidden_states=True)
    spans = video_group_spans(ids, batch["video_grid_thw"], model.config.video_token_id, 2,
                              family)
    (alpha,) = frame_usage(out.hidden_states[-1], spans, torch.ones_like(completion.input_ids))
    assert alpha.shape == (4,) and torch.all(alpha >= 0)
    assert abs(float(alpha.sum()) - 1) < 1e-5
    with pytest.raises(ValueError, match="rows|runs"):  # spans of another layout: an error
        other = "qwen2_5_vl" if family.layout == "per_group" else "qwen3_vl"
        video_group_spans(ids, batch["video_grid_thw"], model.config.video_token_id, 2,
                          family_named(other))


def test_registry_and_refusals(tiny, tmp_path):
    family, model, processor = tiny
    assert family_of(model) is family
    (tmp_path / "config.json").write_text(json.dumps({"model_type": family.name}))
    assert family_for_checkpoint(tmp_path) is family
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_next_video",
                                                      "architectures": ["LlavaNext"]}))
    with pytest.raises(ValueError, match="not a registered model family.*qwen2_5_vl, qwen3_5, "
                                         "qwen3_vl"):
        family_for_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=f"3 frames.*{family.name}.*multiple of 2"):
        family.check_frames(3)
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=f"1 frames.*{family.name}.*set precompute"):
        _batch(family, processor, [frames], [np.zeros(1)])
    # a processor whose video layout is not this adapter's: counts expected and found named
    other = family_named("qwen2_5_vl" if family.layout == "per_group" else "qwen3_vl")
    _, other_processor = other.tiny(0)
    found, expected = (1, 2) if family.layout == "per_group" else (2, 1)
    with pytest.raises(ValueError, match=f"{family.name}.*found {found} runs.*expects {expected}"):
        _batch(family, other_processor, [np.zeros((4, 64, 64, 3), np.uint8)], [np.arange(4.0)])


def test_generation_never_emits_vision_tokens(tiny):
    family, model, processor = tiny
    frames = np.random.default_rng(2).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    batch = _batch(family, processor, [frames, frames[:2]], [np.arange(4.0), np.arange(2.0)])
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=12, do_sample=True)
    new = set(out[:, batch["input_ids"].shape[1]:].flatten().tolist())
    assert not new & set(family.vision_token_ids(model.config))


def test_vision_once_and_shared_prefill_per_family(tiny):
    """Vision once gives the per-row forward's log-probs and gradients; the shared prefill's
    greedy completions equal generate's (families that support it; Qwen3.5 refuses it)."""
    from videocfr.train.engines import Sampling, make_engine
    from videocfr.train.rollout import policy_forward

    family, model, processor = tiny
    rng = np.random.default_rng(3)
    videos = [rng.integers(0, 256, (4, 64, 96, 3), dtype=np.uint8),
              rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)]
    prompts = _batch(family, processor, videos, [np.arange(4.0), np.arange(4.0) * 2])
    greedy = Sampling(6, do_sample=False)
    ref = make_engine("generate").rollout(model, processor, prompts, num_generations=1,
                                          sampling=greedy)
    if family.prefill_once_unsupported is None:
        shared = make_engine("shared_prefill").rollout(model, processor, prompts,
                                                       num_generations=2, sampling=greedy)
        assert torch.equal(shared.completion_ids[::2], ref.completion_ids)
    else:  # refused by the engine itself, naming the family and the setting
        with pytest.raises(ValueError, match=f"{family.name}.*rollout.engine: generate"):
            make_engine("shared_prefill").rollout(model, processor, prompts, num_generations=2,
                                                  sampling=greedy)
    out = {}
    for once in (False, True):
        model.zero_grad()
        logp, _ = policy_forward(model, ref, 1.0, vision_once=once)
        (logp * ref.completion_mask).sum().backward()
        out[once] = (logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                     if p.grad is not None and "visual" in n})
    model.zero_grad()
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
    assert out[True][1].keys() == out[False][1].keys() and out[False][1]
    for name, g in out[False][1].items():
        torch.testing.assert_close(out[True][1][name], g, rtol=1e-4, atol=1e-6, msg=name)
