"""The model-family protocol: what the trainer, α, the scorer and evaluation need of a video LLM.

A family is one transformers architecture (Qwen2.5-VL, Qwen3-VL, Qwen3.5). Its adapter says:

- how to call the processor for exactly the cached frames (`processor_inputs`: frame indices and
  the video's fps as `VideoMetadata`, `do_sample_frames=False`, so the processor never resamples);
- where every temporal group's visual tokens sit in the input ids (`group_spans`, METHOD §4's α);
- which placeholders a completion must never hold (`vision_token_ids`);
- whether the GRPO step's vision-once and prefill-once paths are valid for it, and if not why
  (`vision_once_unsupported`, `prefill_once_unsupported`: None = supported);
- the tiny random model and offline processor of the tests (`tiny`).

Two video layouts exist. "one_block": one `<|vision_start|>` run of t·h·w/merge² placeholders per
video (Qwen2.5-VL; one seconds-per-group value per video). "per_group": every temporal group is its
own `<t seconds><|vision_start|>` + h·w/merge² placeholders + `<|vision_end|>` block, the seconds
computed by the processor from the frame indices and fps (Qwen3-VL, Qwen3.5), so a non-uniform
selection keeps its true times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Span = tuple[int, int]  # [start, end) positions in the sequence, end exclusive

VISION_TOKEN_FIELDS = ("video_token_id", "image_token_id", "vision_start_token_id",
                       "vision_end_token_id")


@dataclass(frozen=True)
class ModelFamily:
    """One registered video-LLM family.

    Args:
        name: the registry key (the checkpoint's `model_type`).
        architecture: the transformers class name of the conditional-generation model.
        layout: "one_block" or "per_group" (see the module docstring).
        takes_timestamps: the prompt carries each group's own seconds (per_group families).
        vision_once_unsupported: None, or why `rollout.vision_once` cannot be used.
        prefill_once_unsupported: None, or why `rollout.engine: shared_prefill` cannot be used.
        video_notes: what the family's model card recommends for video (README / configs).
        tiny_builder: `(seed, shape) -> (model, processor)` for tests.
    """

    name: str
    architecture: str
    layout: str
    takes_timestamps: bool
    vision_once_unsupported: str | None = None
    prefill_once_unsupported: str | None = None
    video_notes: str = ""
    tiny_builder: Callable[..., tuple[Any, Any]] | None = field(default=None, repr=False)

    # -- models --------------------------------------------------------------------------------
    def model_class(self):
        """The transformers class (imported lazily)."""
        import transformers  # noqa: PLC0415

        return getattr(transformers, self.architecture)

    def from_pretrained(self, path, **kw):
        """`<architecture>.from_pretrained(path, **kw)`."""
        return self.model_class().from_pretrained(str(path), **kw)

    def tiny(self, seed: int = 0, shape: str = "tiny"):
        """The tiny random model (float32, eval) and its offline processor."""
        if self.tiny_builder is None:
            raise ValueError(f"model family {self.name!r} has no tiny test model")
        return self.tiny_builder(seed, shape)

    # -- processor -----------------------------------------------------------------------------
    def temporal_patch(self, config) -> int:
        """Frames merged into one temporal group (2 for every registered family)."""
        return int(config.vision_config.temporal_patch_size)

    def merge_size(self, config) -> int:
        return int(config.vision_config.spatial_merge_size)

    def check_frames(self, num_frames: int, config=None, what: str = "video") -> None:
        """Raise unless the frame count fills whole temporal groups (at least one).

        Raises:
            ValueError: naming the family, the count found and the multiple expected.
        """
        tp = 2 if config is None else self.temporal_patch(config)
        if num_frames < tp or num_frames % tp:
            raise ValueError(f"{what}: {num_frames} frames, but model family {self.name!r} "
                             f"merges {tp} frames per temporal group, so it needs a multiple of "
                             f"{tp} (>= {tp}); set precompute's frame count (K) to a multiple of "
                             f"{tp}")

    def video_metadata(self, num_frames: int, indices=None, fps: float | None = None,
                       total_frames: int | None = None, timestamps=None):
        """The `VideoMetadata` of a clip of already-chosen frames.

        Args:
            num_frames: frames passed to the processor.
            indices: int [num_frames] frame numbers in the source video (with `fps`).
            fps: the source video's frame rate.
            total_frames: the source video's frame count (default: num_frames).
            timestamps: float [num_frames] seconds (used when indices/fps are not given).

        Returns:
            VideoMetadata with the frames' true seconds as `indices / fps` (per_group families
            print them in the prompt).
        """
        from transformers.video_utils import VideoMetadata  # noqa: PLC0415

        if indices is not None and fps:
            return VideoMetadata(total_num_frames=int(total_frames or num_frames),
                                 fps=float(fps), frames_indices=[int(i) for i in indices])
        ts = (np.arange(num_frames, dtype=np.float64) if timestamps is None
              else np.asarray(timestamps, np.float64))
        if len(ts) != num_frames:
            raise ValueError(f"{len(ts)} timestamps for {num_frames} frames")
        return self._metadata_from_seconds(ts)

    def _metadata_from_seconds(self, ts: np.ndarray):
        """Seconds as frame numbers at a millisecond rate: index / fps = the true second."""
        from transformers.video_utils import VideoMetadata  # noqa: PLC0415

        rate = 1000.0
        return VideoMetadata(total_num_frames=len(ts), fps=rate,
                             frames_indices=[int(round(t * rate)) for t in ts])

    def processor_inputs(self, processor, texts: list[str], videos: list[np.ndarray],
                         metadata: list) -> Any:
        """The processor call for exactly the given frames (no resampling).

        Args:
            texts: chat-templated prompts, one video placeholder each.
            videos: uint8 [K, H, W, 3] per prompt.
            metadata: `video_metadata(...)` per prompt.

        Returns:
            BatchFeature (input_ids, attention_mask, pixel_values_videos, video_grid_thw, ...),
            checked by `check_layout`.
        """
        for v in videos:
            self.check_frames(len(v))
        batch = processor(text=texts, videos=videos, video_metadata=metadata,
                          do_sample_frames=False, padding=True, return_tensors="pt")
        self.check_layout(batch["input_ids"], batch["video_grid_thw"],
                          processor.tokenizer.convert_tokens_to_ids("<|video_pad|>"),
                          processor.video_processor.merge_size)
        return batch

    # -- spans (α) -----------------------------------------------------------------------------
    def check_layout(self, input_ids, video_grid_thw, video_token_id: int, merge_size: int):
        """`group_spans` as a check of the processor's output (ValueError on a mismatch)."""
        self.group_spans(input_ids, video_grid_thw, video_token_id, merge_size)

    def group_spans(self, input_ids: torch.Tensor, video_grid_thw: torch.Tensor | None,
                    video_token_id: int, merge_size: int = 2) -> list[list[list[Span]]]:
        """Token spans of every temporal group of every video, per sample.

        Args:
            input_ids: int64 [B, T] (prompt ids, or prompt + completion when completions hold
                no video placeholder).
            video_grid_thw: int64 [V, 3] (t, h, w) in patches per video, reading order.
            video_token_id: the `<|video_pad|>` id.
            merge_size: the vision tower's spatial_merge_size.

        Returns:
            spans[b][v] = [(start_g, end_g) for g in range(t)], each of h·w/merge² tokens.

        Raises:
            ValueError: runs of video tokens found ≠ expected by the grid and the family's layout
                (naming the family, both counts, and what to change).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        grid = (torch.zeros(0, 3, dtype=torch.long) if video_grid_thw is None
                else torch.as_tensor(video_grid_thw).reshape(-1, 3).long().cpu())
        is_video = (input_ids == video_token_id).to(torch.int8).cpu()
        padded = torch.nn.functional.pad(is_video, (1, 1))
        edges = padded[:, 1:] - padded[:, :-1]
        starts = (edges == 1).nonzero().tolist()  # [[b, start], ...] sorted by (b, start)
        ends = (edges == -1).nonzero()[:, 1].tolist()
        per_group = self.layout == "per_group"
        div = merge_size * merge_size
        sizes = []
        for v, (t, h, w) in enumerate(grid.tolist()):
            if (h * w) % div:
                raise ValueError(f"video {v}: grid h·w = {h * w} is not divisible by merge² = "
                                 f"{div}; pass the vision tower's spatial_merge_size")
            sizes.append((t, h * w // div))
        expected = sum(t for t, _ in sizes) if per_group else len(sizes)
        if len(starts) != expected:
            unit = "temporal groups (one block each)" if per_group else "videos (one block each)"
            raise ValueError(
                f"model family {self.name!r} ({self.layout} layout): found {len(starts)} runs of "
                f"video tokens (id {video_token_id}) in input_ids but video_grid_thw "
                f"({grid.shape[0]} rows) expects {expected} for its {unit}; the processor does "
                "not lay out video tokens as this family's adapter does (check model.family / "
                "the checkpoint's processor), or ids and grid come from different processor "
                "calls, or a prompt was truncated through a video")
        spans: list[list[list[Span]]] = [[] for _ in range(input_ids.shape[0])]
        run = 0
        for v, (t, n) in enumerate(sizes):
            b = starts[run][0]
            blocks = [(starts[run + g][1], ends[run + g]) for g in range(t)] if per_group else None
            if per_group:
                groups = blocks
                got = [e - s for s, e in blocks]
                bad = any(starts[run + g][0] != b for g in range(t)) or any(x != n for x in got)
                run += t
            else:
                s, e = starts[run][1], ends[run]
                got = [e - s]
                bad = e - s != t * n
                groups = [(s + g * n, s + (g + 1) * n) for g in range(t)]
                run += 1
            if bad:
                raise ValueError(
                    f"model family {self.name!r}: video {v} (sample {b}) has runs of {got} video "
                    f"tokens but grid (t={t}, h·w/merge²={n}) needs "
                    f"{f'{n} per group' if per_group else t * n}; pass the input_ids and "
                    "video_grid_thw of the same processor call")
            spans[b].append(groups)
        return spans

    # -- rollouts ------------------------------------------------------------------------------
    def vision_token_ids(self, config) -> list[int]:
        """The vision placeholder ids (suppressed in every completion)."""
        return [t for t in (getattr(config, n, None) for n in VISION_TOKEN_FIELDS)
                if t is not None]

    def expand_video_outputs(self, outputs, index: torch.Tensor):
        """The vision output of B prompts laid out for rows `index` (no copy: row r's tensors
        are prompt index[r]'s, so the G gradients add up in the one vision pass). DeepStack
        features (a list per injected layer of per-video tensors) are laid out the same way."""
        rows = index.tolist()
        kw = {"pooler_output": tuple(outputs.pooler_output[i] for i in rows)}
        deep = getattr(outputs, "deepstack_features", None)
        if deep is not None:
            kw["deepstack_features"] = [tuple(layer[i] for i in rows) for layer in deep]
        return type(outputs)(**kw)

    def check_engine(self, vision_once: bool, engine: str) -> None:
        """Raise when the config asks for a path this family cannot take (never silently)."""
        if vision_once and self.vision_once_unsupported:
            raise ValueError(f"rollout.vision_once: model family {self.name!r} cannot: "
                             f"{self.vision_once_unsupported}; set rollout.vision_once: false")
        if engine == "shared_prefill" and self.prefill_once_unsupported:
            raise ValueError(f"rollout.engine shared_prefill: model family {self.name!r} "
                             f"cannot: {self.prefill_once_unsupported}; set "
                             "rollout.engine: generate")
