"""The precompute config: one dataclass per section, loaded from YAML with strict keys.

The whole config (`PrecomputeConfig.to_dict()`) is recorded in the cache; its hash is the cache's
config hash, so a shard job finished under one config is never mistaken for one under another.

YAML layout (every key optional; defaults below)::

    sampling:  {num_frames: 32, fps: null, max_frames: 256, short_side: 224, decoder: decord}
    scenes:    {detector: adaptive, params: {}, min_scene_len: 15, downscale_width: 256}
    clip:      {model: ViT-B-32, pretrained: openai, device: cpu, batch_size: 32,
                precision: fp32, seed: 0}
    saliences: {scene_temperature: 0.1, aggregation: max, patch_tokens: true,
                option_queries: true}
    fusion:    {preset: cfr, w_uniform: 0.1, w_scene: 1.0, w_semantic: 3.0, w_novelty: 0,
                temperature: 0.1,
                semantic_top_frac: 0.25}
    decode:    {timeout_s: 300, prefetch: 2, workers: auto}
    shards:    {max_videos: 1000, max_bytes: 1073741824}

Settings that only decide how fast a run goes, never what it writes, are left out of the
recorded config (`RUNTIME_ONLY`): `decode.workers` (the parts of a video merge into exactly what
one pass gives). So shard processes on machines of different sizes build one cache, and caches
stay byte-identical whatever the core count.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videocfr.cache_format.config_sections import build_section, build_sections, read_yaml_mapping
from videocfr.cache_format.fusion import FusionConfig

from .decode import SamplingConfig
from .saliences import SalienceConfig
from .scenes import SceneConfig


@dataclass
class ClipConfig:
    """Which CLIP model embeds frames and texts.

    Args:
        model: open_clip architecture ("ViT-B-32"), "videocfr-tiny" (tests), or "hf-hub:org/repo".
        pretrained: open_clip tag ("openai", "laion2b_s34b_b79k"), a local checkpoint file, or
            "none" for random weights (the cache then says "random").
        device: torch device ("cpu", "cuda", "cuda:0").
        batch_size: frames per CLIP forward pass.
        precision: "fp32", or "fp16"/"bf16" on CUDA.
        seed: torch seed of random weights (pretrained "none"), so runs repeat exactly.
    """

    model: str = "ViT-B-32"
    pretrained: str = "openai"
    device: str = "cpu"
    batch_size: int = 32
    precision: str = "fp32"
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("clip.model must be an open_clip model name, e.g. ViT-B-32")
        if not isinstance(self.pretrained, str):
            raise ValueError(f"clip.pretrained must be a string (tag, file path or 'none'), got "
                             f"{self.pretrained!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"clip.batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"clip.precision must be fp32, fp16 or bf16, got {self.precision!r}")


@dataclass
class DecodeConfig:
    """How the decode pass runs.

    Args:
        timeout_s: per-video decode timeout in seconds (enforced; the video then fails).
        prefetch: videos decoded ahead of the CLIP pass.
        workers: decode processes, "auto" (the cores this process may use, divided by
            LOCAL_WORLD_SIZE when several processes share the node; see
            precompute.worker.default_workers) or an int >= 1. Long videos are split into up
            to this many parts decoded at once. Not recorded in the cache (speed only).
    """

    timeout_s: float = 300.0
    prefetch: int = 2
    workers: int | str = "auto"

    def __post_init__(self):
        if not isinstance(self.timeout_s, int | float) or not self.timeout_s > 0:
            raise ValueError(f"decode.timeout_s must be > 0 seconds, got {self.timeout_s!r}")
        if not isinstance(self.prefetch, int) or self.prefetch < 0:
            raise ValueError(f"decode.prefetch must be an int >= 0, got {self.prefetch!r}")
        if self.workers != "auto" and (not isinstance(self.workers, int)
                                       or isinstance(self.workers, bool) or self.workers < 1):
            raise ValueError(f"decode.workers must be 'auto' or an int >= 1 (decode "
                             f"processes), got {self.workers!r}")

    def num_workers(self) -> int:
        """The number of decode processes this run uses."""
        from .worker import default_workers

        return default_workers() if self.workers == "auto" else int(self.workers)


@dataclass
class ShardConfig:
    """Shard size limits of the writer (a job's shard is split into parts past them).

    Args:
        max_videos: videos per shard file.
        max_bytes: approximate bytes per shard file.
    """

    max_videos: int = 1000
    max_bytes: int = 1 << 30

    def __post_init__(self):
        if not isinstance(self.max_videos, int) or self.max_videos < 1:
            raise ValueError(f"shards.max_videos must be an int >= 1, got {self.max_videos!r}")
        if not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"shards.max_bytes must be an int >= 1, got {self.max_bytes!r}")


# section -> fields left out of the recorded (hashed) config: they change speed, not results.
RUNTIME_ONLY: dict[str, tuple[str, ...]] = {"decode": ("workers",)}
# section -> {field: default} recorded only when set to something else: fields added after
# caches existed, so the caches built without them keep their config hash.
RECORDED_IF_SET: dict[str, dict[str, Any]] = {"sampling": {"decoder": "decord"}}

SECTIONS: dict[str, type] = {
    "sampling": SamplingConfig,
    "scenes": SceneConfig,
    "clip": ClipConfig,
    "saliences": SalienceConfig,
    "fusion": FusionConfig,
    "decode": DecodeConfig,
    "shards": ShardConfig,
}


@dataclass
class PrecomputeConfig:
    """Everything that decides what a precompute run writes (see the module docstring)."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    saliences: SalienceConfig = field(default_factory=SalienceConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, build_section(cls, value, name))
            elif not isinstance(value, cls):
                raise ValueError(f"config section {name!r} must be a {cls.__name__} or a "
                                 f"mapping, got {type(value).__name__}")

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "precompute config") -> PrecomputeConfig:
        """Build from a mapping of sections; unknown sections or keys raise ValueError."""
        data = data or {}
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a mapping of sections {list(SECTIONS)}")
        return cls(**build_sections(SECTIONS, data, where))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PrecomputeConfig:
        """Load a YAML file (see configs/precompute/*.yaml)."""
        path = Path(path)
        data = read_yaml_mapping(path, "precompute config", "configs/precompute/")
        try:
            return cls.from_dict(data, where="precompute config")
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def with_sampling(self, overrides: dict | None) -> PrecomputeConfig:
        """A copy with some sampling fields replaced (a dataset's own sampling overrides)."""
        if not overrides:
            return self
        merged = {**dataclasses.asdict(self.sampling), **overrides}
        return dataclasses.replace(self, sampling=build_section(SamplingConfig, merged,
                                                                "dataset sampling"))

    def to_dict(self) -> dict:
        """Plain JSON data of every section (recorded in the cache; hashed), without the
        `RUNTIME_ONLY` fields."""
        out = {}
        for name in SECTIONS:
            data = _plain(dataclasses.asdict(getattr(self, name)))
            for key in RUNTIME_ONLY.get(name, ()):
                data.pop(key, None)
            for key, default in RECORDED_IF_SET.get(name, {}).items():
                if data.get(key) == default:
                    data.pop(key)
            out[name] = data
        return out


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the dict equals its JSON round trip."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
