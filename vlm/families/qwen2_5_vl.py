"""Qwen2.5-VL: one `<|vision_start|>` block per video, one seconds-per-group value per video.

The processor turns the clip's metadata into `second_per_grid_ts = 2 / sampled_fps`, one number
per video: the temporal mRoPE positions of a non-uniform selection are spaced as if its frames
were uniform (the prompt carries no per-frame time). Vision-once and prefill-once both hold: the
forward takes `mm_encoder_outputs` and explicit 4-row position ids, its cache is a plain KV cache.
"""

from __future__ import annotations

import numpy as np

from .base import ModelFamily


def _tiny(seed: int, shape: str):
    from ..tiny import tiny_model_and_processor  # noqa: PLC0415

    return tiny_model_and_processor(seed, shape)


class Qwen2_5_VLFamily(ModelFamily):
    """Qwen2.5-VL's adapter (today's behaviour)."""

    def _metadata_from_seconds(self, ts: np.ndarray):
        """One fps for the clip: 1 / the median gap of its seconds (the project's choice for
        selections; Qwen2.5-VL cannot express per-frame times)."""
        from transformers.video_utils import VideoMetadata  # noqa: PLC0415

        step = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0
        fps = 1.0 / step if step > 0 else 1.0
        return VideoMetadata(total_num_frames=len(ts), fps=fps,
                             frames_indices=list(range(len(ts))))


FAMILY = Qwen2_5_VLFamily(
    name="qwen2_5_vl",
    architecture="Qwen2_5_VLForConditionalGeneration",
    layout="one_block",
    takes_timestamps=False,
    video_notes=("model card: video fps 2.0 by default (qwen-vl-utils FPS=2), "
                 "VIDEO_MAX_PIXELS 768*28*28, VIDEO_TOTAL_PIXELS budget; patch 14, merge 2 "
                 "(28 px per visual token)"),
    tiny_builder=_tiny,
)
