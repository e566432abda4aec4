"""Qwen3.5: natively multimodal, hybrid Gated-DeltaNet (linear attention) + attention layers.

Video layout as Qwen3-VL (a `<t seconds><|vision_start|>…<|vision_end|>` block per temporal group,
the processor is `Qwen3VLProcessor`), no DeepStack. Vision-once holds (the forward takes
`mm_encoder_outputs`; tests/test_families.py checks its log-probs and gradients). Prefill-once
does not: the shared prefill expands a prompt's cache to its G rows by `batch_repeat_interleave`,
which the Gated-DeltaNet layers' cache (transformers 5.25's `LinearAttentionLayer`: a recurrent
and a convolution state) does not have (AttributeError when tried), so the family runs
`rollout.engine: generate`.
"""

from __future__ import annotations

import torch

from .base import ModelFamily
from .qwen3_vl import finish_tiny, tiny_config_kwargs, tiny_processor


def _tiny(seed: int, shape: str):
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration  # noqa: PLC0415

    processor = tiny_processor()
    text, vision, top = tiny_config_kwargs(processor.tokenizer, shape)
    vision.pop("deepstack_visual_indexes")
    text.update(layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
                linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                linear_num_value_heads=4)
    text["rope_parameters"]["partial_rotary_factor"] = 1.0
    config = Qwen3_5Config(text_config=text, vision_config=vision, **top)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3_5ForConditionalGeneration(config)
    return finish_tiny(model, processor.tokenizer, FAMILY), processor


FAMILY = ModelFamily(
    name="qwen3_5",
    architecture="Qwen3_5ForConditionalGeneration",
    layout="per_group",
    takes_timestamps=True,
    prefill_once_unsupported=(
        "its Gated-DeltaNet layers cache a recurrent and a convolution state, not keys/values, "
        "and their cache layer (transformers' LinearAttentionLayer) has no "
        "batch_repeat_interleave, so one prompt's cache cannot be expanded to its G rows"),
    video_notes=("processor as Qwen3-VL (Qwen3VLProcessor / Qwen3VLVideoProcessor): patch 16, "
                 "merge 2, fps 2, per-frame pixels 128*32*32 .. 768*32*32"),
    tiny_builder=_tiny,
)
