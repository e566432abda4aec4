"""Frame usage α (METHOD §4): spans tied to the real Qwen2.5-VL, α on known numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from videocfr.vlm.alpha import (
    alpha_entropy,
    frame_usage,
    group_prior,
    video_group_spans,
)
from videocfr.vlm.coverage import check_aligned

VIDEO_ID = 7


def _ids(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


# --- spans on hand-built ids -------------------------------------------------------------------


def test_spans_hand_built_two_samples_with_padding():
    v = VIDEO_ID
    # sample 0: pad pad start [v*8] end x ; grid (2, 4, 4) -> 2 groups of 4 tokens
    # sample 1: start [v*3] end x x x x x x ; grid (3, 2, 2) -> 3 groups of 1 token
    ids = _ids([0, 0, 1] + [v] * 8 + [2, 5], [1] + [v] * 3 + [2] + [5] * 8)
    spans = video_group_spans(ids, torch.tensor([[2, 4, 4], [3, 2, 2]]), v)
    assert spans == [[[(3, 7), (7, 11)]], [[(1, 2), (2, 3), (3, 4)]]]


def test_spans_no_video_and_two_videos():
    v = VIDEO_ID
    ids = _ids([1, v, v, 2, 1, v, v, 2], [5] * 8)
    spans = video_group_spans(ids, torch.tensor([[2, 2, 2], [1, 2, 4]]), v)
    assert spans == [[[(1, 2), (2, 3)], [(5, 7)]], []]
    assert video_group_spans(_ids([5, 5]), None, v) == [[]]


@pytest.mark.parametrize(
    "ids, grid, match",
    [
        ([1, VIDEO_ID, VIDEO_ID, VIDEO_ID, 2], [[2, 2, 2]], "needs 2"),
        ([1, VIDEO_ID, 2], [[1, 2, 2], [1, 2, 2]], "2 rows"),
        ([1, VIDEO_ID, 2], [[1, 2, 3]], "not divisible"),
    ],
    ids=["run-length-mismatch", "too-many-grid-rows", "odd-grid"],
)
def test_spans_errors(ids, grid, match):
    with pytest.raises(ValueError, match=match):
        video_group_spans(_ids(ids), torch.tensor(grid), VIDEO_ID)


# --- α on hand-built hidden states --------------------------------------------------------------


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [x / sum(e) for x in e]


def test_frame_usage_known_numbers():
    # T = 7: [vision_start, g0 t0, g0 t1, g1 t0, g1 t1, answer, answer]; D = 2.
    h = torch.tensor(
        [[[9.0, 9.0], [1.0, 0.0], [0.0, -3.0], [0.0, 1.0], [-2.0, 0.2], [1.0, 0.0], [1.0, 1.0]]]
    )
    spans = [[[(1, 3), (3, 5)]]]
    mask = torch.tensor([[0, 0, 0, 0, 0, 1, 1]])
    (alpha,) = frame_usage(h, spans, mask, tau=0.1)
    # F_0 = elementwise max = [1, 0]; F_1 = [0, 1].
    a1 = _softmax([1.0 / 0.1, 0.0])  # answer [1, 0]: cos = (1, 0)
    c = 1 / math.sqrt(2)
    a2 = _softmax([c / 0.1, c / 0.1])  # answer [1, 1]: cos = (c, c)
    expected = [(a1[g] + a2[g]) / 2 for g in range(2)]
    assert alpha.dtype == torch.float32
    np.testing.assert_allclose(alpha.numpy(), expected, rtol=1e-6)
    assert abs(float(alpha.sum()) - 1) < 1e-6


def test_frame_usage_max_is_elementwise_and_mask_applies():
    # group 0 tokens [1,0] and [0,1] -> F_0 = [1,1]; group 1 tokens [1,-1], [0,-2] -> F_1 = [1,-1].
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, -1.0], [0.0, -2.0], [1.0, 1.0], [0.0, 1.0]]])
    spans = [[[(0, 2), (2, 4)]]]
    # only the answer token at position 4 ([1,1]) is masked in: cos = (1, 0)
    (alpha,) = frame_usage(h, spans, torch.tensor([[0, 0, 0, 0, 1, 0]]), tau=0.5)
    np.testing.assert_allclose(alpha.numpy(), _softmax([2.0, 0.0]), rtol=1e-6)
    # right-aligned [B, C] mask: last 2 positions, first of them masked in -> same α
    (alpha_c,) = frame_usage(h, spans, torch.tensor([[1, 0]]), tau=0.5)
    torch.testing.assert_close(alpha_c, alpha)
    with pytest.raises(ValueError, match="equal, contiguous"):
        frame_usage(h, [[[(0, 2), (2, 3)]]], torch.tensor([[1, 0]]))


def test_frame_usage_no_video_no_answer_and_errors():
    h = torch.randn(3, 6, 4)
    spans = [[[(0, 2), (2, 4)]], [], [[(0, 2), (2, 4)]]]
    mask = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1], [0] * 6])
    out = frame_usage(h, spans, mask)
    assert out[0] is not None and out[0].shape == (2,)
    assert out[1] is None and out[2] is None
    with pytest.raises(ValueError, match="one video per sample"):
        frame_usage(h[:1], [[[(0, 1)], [(2, 3)]]], mask[:1])
    with pytest.raises(ValueError, match="completion_mask"):
        frame_usage(h, spans, torch.ones(3, 7))
    with pytest.raises(ValueError, match="tau"):
        frame_usage(h, spans, mask, tau=0)


def test_frame_usage_is_detached():
    h = torch.randn(1, 5, 4, requires_grad=True)
    (alpha,) = frame_usage(h, [[[(0, 2), (2, 4)]]], torch.tensor([[0, 0, 0, 0, 1]]))
    assert not alpha.requires_grad


def test_group_prior_and_alignment():
    p = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    np.testing.assert_allclose(group_prior(p), [0.3, 0.7], rtol=1e-6)
    torch.testing.assert_close(group_prior(torch.tensor(p)), torch.tensor([0.3, 0.7]))
    with pytest.raises(ValueError, match="even"):
        group_prior(np.ones(5, np.float32) / 5)
    with pytest.raises(ValueError, match="16 temporal groups but the grouped prior has 8"):
        check_aligned(16, 8)
    check_aligned(8, 8)


def test_alpha_entropy():
    assert alpha_entropy(np.array([1.0, 0.0])) == 0.0
    assert alpha_entropy(torch.full((4,), 0.25)) == pytest.approx(math.log(4))


# --- spans tied to the real Qwen2.5-VL model ----------------------------------------------------


def _prompt(processor, question: str) -> str:
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def _inputs_embeds(model, batch) -> torch.Tensor:
    """The merged inputs_embeds the language model receives (text + scattered video features)."""
    captured = {}

    def hook(module, args, kwargs):
        captured["e"] = kwargs["inputs_embeds"].detach().clone()

    handle = model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        handle.remove()
    return captured["e"]


@pytest.mark.parametrize(
    "num_frames, height, width",
    [(4, 56, 56), (6, 28, 84), (8, 70, 90), (2, 40, 30)],
    ids=["K4-56x56", "K6-28x84", "K8-70x90", "K2-40x30"],
)
def test_group_spans_are_where_the_model_puts_each_frame_pair(tiny_vlm, num_frames, height, width):
    """Changing frames (2g, 2g+1) changes the model's input embeddings exactly on span g.

    Qwen2.5-VL's vision tower attends within a temporal group, so the features of group g depend
    only on frames 2g, 2g+1; the positions where the merged inputs_embeds change are therefore the
    positions where the model placed group g. A second sample of another size, with left padding,
    checks the per-sample offsets.
    """
    model, processor = tiny_vlm
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    texts = [_prompt(processor, "What happens?"), _prompt(processor, "Longer question here, ok?")]

    def batch_for(video):
        return processor(text=texts, videos=[video, other], return_tensors="pt", padding=True)

    batch = batch_for(frames)
    grid = batch["video_grid_thw"]
    assert int(grid[0, 0]) == num_frames // 2
    spans = video_group_spans(batch["input_ids"], grid, model.config.video_token_id,
                              model.config.vision_config.spatial_merge_size)
    assert len(spans[0][0]) == num_frames // 2
    vision_start = model.config.vision_start_token_id
    assert int(batch["input_ids"][0, spans[0][0][0][0] - 1]) == vision_start
    base = _inputs_embeds(model, batch)

    for g, (start, end) in enumerate(spans[0][0]):
        changed = frames.copy()
        changed[2 * g : 2 * g + 2] = 255 - changed[2 * g : 2 * g + 2]
        embeds = _inputs_embeds(model, batch_for(changed))
        diff = (embeds - base).abs().amax(dim=-1) > 1e-6  # (B, T)
        where = diff.nonzero().tolist()
        assert where == [[0, t] for t in range(start, end)], f"group {g}"

    # The model's 3D rope: the temporal index is constant within a group, rising across groups
    # (1 s per group here; raw arrays default to 24 fps, which rounds the time steps to 0).
    pos, _ = model.model.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"], video_grid_thw=grid,
        second_per_grid_ts=torch.ones(2), attention_mask=batch["attention_mask"],
    )
    t_first = []
    for start, end in spans[0][0]:
        assert len(set(pos[0, 0, start:end].tolist())) == 1
        t_first.append(int(pos[0, 0, start]))
    assert all(b > a for a, b in zip(t_first, t_first[1:]))


def test_frame_usage_on_the_real_forward(tiny_vlm):
    """α from the policy forward's last hidden states: one value per group, a distribution."""
    model, processor = tiny_vlm
    frames = np.random.default_rng(1).integers(0, 256, (8, 56, 56, 3), dtype=np.uint8)
    batch = processor(text=[_prompt(processor, "Q?")], videos=[frames], return_tensors="pt")
    completion = processor.tokenizer("<think>x</think><answer>A</answer>", return_tensors="pt")
    ids = torch.cat([batch["input_ids"], completion.input_ids], dim=1)
    full = dict(batch, input_ids=ids,
                attention_mask=torch.ones_like(ids),
                mm_token_type_ids=torch.nn.functional.pad(batch["mm_token_type_ids"],
                                                          (0, completion.input_ids.shape[1])))
    with torch.no_grad():
        out = model(**full, output_hidden_states=True)
    spans = video_group_spans(ids, batch["video_grid_thw"], model.config.video_token_id)
    mask = torch.ones_like(completion.input_ids)  # [B, C], right-aligned
    (alpha,) = frame_usage(out.hidden_states[-1], spans, mask)
    assert alpha.shape == (4,)
    assert torch.all(alpha >= 0) and abs(float(alpha.sum()) - 1) < 1e-5


def test_tiny_processor_generate_and_ids_match(tiny_vlm):
    """Tiny processor ids are the model config's; generation never emits vision tokens."""
    model, processor = tiny_vlm
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids("<|video_pad|>") == model.config.video_token_id
    assert tok.convert_tokens_to_ids("<|vision_start|>") == model.config.vision_start_token_id
    assert tok.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    assert len(tok) <= model.config.text_config.vocab_size
    text = "<think>a</think><answer>B</answer>"
    assert tok.decode(tok(text).input_ids) == text
    frames = np.random.default_rng(2).integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
    batch = processor(text=[_prompt(processor, "Q?")] * 2, videos=[frames, frames[:2]],
                      return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=24, do_sample=True)
    completion = out[:, batch["input_ids"].shape[1]:]
    vision_ids = {model.config.video_token_id, model.config.image_token_id,
                  model.config.vision_start_token_id, model.config.vision_end_token_id}
    assert not (set(completion.flatten().tolist()) & vision_ids)
