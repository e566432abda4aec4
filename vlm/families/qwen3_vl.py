"""Qwen3-VL: every temporal group its own `<t seconds><|vision_start|>…<|vision_end|>` block.

The processor prints each group's seconds (the mean of its two frames' `index / fps`) before the
group, so a selection keeps its true times; temporal mRoPE is per group (t = 1 each) and the
vision tower's DeepStack features (one per `deepstack_visual_indexes` layer) are added to the
visual tokens' hidden states in the first LLM layers. Vision-once holds: the forward takes
`mm_encoder_outputs` whose `deepstack_features` are laid out per row with the pooled features
(`ModelFamily.expand_video_outputs`). Prefill-once holds: a plain KV cache, 4-row positions.
"""

from __future__ import annotations

import torch

from .base import ModelFamily

# Pixel budgets of the tiny processor (patch 16, merge 2 -> 32 px per visual token). Qwen3-VL's
# `size["longest_edge"]` is the whole clip's budget (t·h·w), capped per frame at
# `max_video_tokens` tokens (cap_pixels_per_frame, as qwen-vl-utils): 1..6 tokens per group.
TINY_MIN_PIXELS = 32 * 32
TINY_MAX_VIDEO_PIXELS = 32 * 32 * 6 * 64
TINY_MAX_FRAME_TOKENS = 6

SHAPES = {
    "tiny": {
        "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16),
        "mrope": [2, 3, 3],
        "vision": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                       num_position_embeddings=64, deepstack_visual_indexes=[0]),
    },
}


def tiny_processor():
    """A real `Qwen3VLProcessor` built offline (byte tokenizer, patch 16, 1..6 tokens/group)."""
    from transformers import (  # noqa: PLC0415
        Qwen2VLImageProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    from ..tiny import CHAT_TEMPLATE, tiny_tokenizer  # noqa: PLC0415

    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2)
    image = Qwen2VLImageProcessor(**common, size={"shortest_edge": TINY_MIN_PIXELS,
                                                  "longest_edge": TINY_MIN_PIXELS * 6})
    video = Qwen3VLVideoProcessor(**common, cap_pixels_per_frame=True,
                                  max_video_tokens=TINY_MAX_FRAME_TOKENS,
                                  size={"shortest_edge": TINY_MIN_PIXELS,
                                        "longest_edge": TINY_MAX_VIDEO_PIXELS})
    return Qwen3VLProcessor(image_processor=image, tokenizer=tiny_tokenizer(),
                            video_processor=video,
                            chat_template=CHAT_TEMPLATE)


def tiny_config_kwargs(tok, shape: str) -> tuple[dict, dict, dict]:
    """(text, vision, top-level) config kwargs with the tokenizer's special ids."""
    if shape not in SHAPES:
        raise ValueError(f"tiny model shape {shape!r} unknown for this family; use one of "
                         f"{sorted(SHAPES)}")
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>",
            "<|vision_start|>", "<|vision_end|>")}
    s = SHAPES[shape]
    text = dict(**s["text"], vocab_size=((len(tok) + 7) // 8) * 8, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                 "mrope_section": s["mrope"], "mrope_interleaved": True},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    vision = dict(**s["vision"], patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  out_hidden_size=s["text"]["hidden_size"])
    top = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
               vision_start_token_id=ids["<|vision_start|>"],
               vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    return text, vision, top


def finish_tiny(model, tok, family: ModelFamily):
    """Generation ids from the tokenizer, vision placeholders suppressed, eval mode."""
    tc = model.config.text_config
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = (tc.eos_token_id, tc.pad_token_id,
                                                         tc.bos_token_id)
    gc.suppress_tokens = family.vision_token_ids(model.config)
    return model.eval()


def _tiny(seed: int, shape: str):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: PLC0415

    processor = tiny_processor()
    text, vision, top = tiny_config_kwargs(processor.tokenizer, shape)
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **top)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    return finish_tiny(model, processor.tokenizer, FAMILY), processor


FAMILY = ModelFamily(
    name="qwen3_vl",
    architecture="Qwen3VLForConditionalGeneration",
    layout="per_group",
    takes_timestamps=True,
    video_notes=("Qwen3-VL cookbook / processor defaults: patch 16, merge 2 (32 px per visual "
                 "token), video fps 2, 4..768 frames, per-frame pixels 128*32*32 .. 768*32*32; "
                 "timestamps printed per temporal group"),
    tiny_builder=_tiny,
)
