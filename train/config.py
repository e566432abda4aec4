"""The CF-GRPO trainer's configuration: nested dataclasses loaded from YAML.

A YAML file has the sections `model`, `data`, `grpo`, `reward`, `rollout` and `run`; every key is
a field below. Unknown keys are errors naming the key; `key=value` overrides from the command line
address fields as `section.field` (`grpo.beta=0`, `run.max_steps=10`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videocfr.cache_format.config_sections import (
    apply_overrides,
    build_sections,
    parse_override,  # noqa: F401  (part of this module's API: `videocfr train` overrides)
    read_yaml_mapping,
)
from videocfr.vlm.answers import ANSWER_MODES
from videocfr.vlm.coverage import ALIGNMENTS
from videocfr.vlm.decoders import DECODERS
from videocfr.vlm.prompts import PROMPTS

GATES = ("soft", "hard", "none")
LR_SCHEDULES = ("constant", "linear", "cosine")
TINY_SHAPES = ("tiny", "vision", "2b")
DECODE_METHODS = ("auto", "sequential", "seek")
LOSS_TYPES = ("sequence", "token")


@dataclass
class ModelConfig:
    """The policy.

    Args:
        path: a local checkpoint directory of a registered model family (vlm.families:
            qwen2_5_vl, qwen3_vl, qwen3_5; read from its config.json's model_type).
        tiny: build a tiny random model and an offline processor instead (tests, demo).
        tiny_family: the family of the tiny model (a vlm.families name).
        tiny_seed: seed of the tiny model's random weights.
        tiny_shape: "tiny" (hidden 64, 2 layers: tests), "vision" (Qwen2.5-VL's vision tower,
            a 2-layer LLM: CPU speed checks) or "2b" (Qwen2-VL-2B's transformer
            shapes with the tiny byte vocabulary: speed checks on a GPU, still random weights).
        bf16: run the policy (and reference) in bfloat16.
        attn_implementation: passed to from_pretrained ("sdpa", "eager", "flash_attention_2").
        video_max_pixels: the video processor's size["longest_edge"] (None: its default);
            Qwen2.5-VL: pixels per frame; Qwen3-VL / Qwen3.5: pixels of the whole clip (t·h·w),
            each frame capped at the processor's max_video_tokens.
        video_min_pixels: per-frame pixel floor given to the video processor (None: its default).
        gradient_checkpointing: trade compute for memory in the policy's backward pass.
        freeze_vision: train the language model only: the vision tower (and its merger) gets
            no gradient and no optimizer state, and the backward pass skips it.
    """

    path: str | None = None
    tiny: bool = False
    tiny_seed: int = 0
    tiny_shape: str = "tiny"
    tiny_family: str = "qwen2_5_vl"
    bf16: bool = False
    attn_implementation: str = "sdpa"
    video_max_pixels: int | None = None
    video_min_pixels: int | None = None
    gradient_checkpointing: bool = False
    freeze_vision: bool = False

    def __post_init__(self):
        if self.tiny == (self.path is not None):
            raise ValueError("model: set exactly one of `model.path` (a Qwen2.5-VL checkpoint) "
                             "or `model.tiny: true` (tiny random model for tests)")
        if self.tiny_shape not in TINY_SHAPES:
            raise ValueError(f"model.tiny_shape {self.tiny_shape!r} unknown; use one of "
                             f"{TINY_SHAPES}")
        for name in ("video_max_pixels", "video_min_pixels"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"model.{name} must be > 0 or null, got {value}")


@dataclass
class DataConfig:
    """Where the (video, question) pairs and their frames come from.

    Args:
        cache_dir: a finished precompute cache (manifest.json + shards/).
        video_root: directory the cache's video paths are relative to (None: the cache config's).
        prior_cache_dir: take the priors from another cache of the same videos (e.g. one
            re-fused with another preset by `videocfr cache re-fuse`); None: cache_dir.
        expect_config_hash: refuse a cache built with another precompute config (None: any).
        allow_missing_prior: train on pairs without a cached prior (they get no CF term and are
            counted); when false such a pair is an error.
        shuffle: shuffle the pairs each epoch (seeded by run.seed).
        decode: "sequential" (one pass through the file), "seek" (a seek per frame) or "auto".
        decoder: the frame decoder (vlm.decoders.DECODERS: decord, pyav); None: the one the
            cache recorded, so the model sees the frames the prior was computed on.
        max_samples: use only the first N pairs (None: all).
        num_workers: background processes that decode and process the next micro-batches
            while the current step runs (0: decode inside the step).
        prefetch_factor: micro-batches each worker prepares ahead (with num_workers > 0).
        prompt: "video-r1" (think, then the answer in tags; train.data) or "letter" (the
            frozen scorer's letter prompt, which the world VLM was trained on).
    """

    cache_dir: str = "caches/demo"
    video_root: str | None = None
    prior_cache_dir: str | None = None
    expect_config_hash: str | None = None
    allow_missing_prior: bool = False
    shuffle: bool = True
    decode: str = "auto"
    decoder: str | None = None
    max_samples: int | None = None
    num_workers: int = 0
    prefetch_factor: int = 2
    prompt: str = "video-r1"

    def __post_init__(self):
        if self.prompt not in PROMPTS:
            raise ValueError(f"data.prompt {self.prompt!r} unknown; use one of {PROMPTS}")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError(f"data.num_workers must be >= 0 and data.prefetch_factor >= 1, got "
                             f"{self.num_workers} and {self.prefetch_factor}")
        if self.decode not in DECODE_METHODS:
            raise ValueError(f"data.decode {self.decode!r} unknown; use one of {DECODE_METHODS}")
        if self.decoder is not None and self.decoder not in DECODERS:
            raise ValueError(f"data.decoder {self.decoder!r} unknown; use one of "
                             f"{sorted(DECODERS)} or leave it unset (the cache's own)")
        if self.max_samples is not None and self.max_samples <= 0:
            raise ValueError(f"data.max_samples must be > 0 or null, got {self.max_samples}")


@dataclass
class GRPOConfig:
    """GRPO numbers (METHOD §6).

    Args:
        num_generations: G, completions sampled per prompt.
        beta: KL coefficient; 0 loads no reference model.
        epsilon: clip range of the ratio ρ.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping (0: none).
        batch_size: prompts per micro-batch and rank (each gives G completions).
        grad_accum_steps: micro-batches per step; their gradients are summed into one
            optimizer update (train.optim).
        updates_per_batch: optimizer updates on one step's rollouts (ρ != 1 after the first).
        lr_schedule: "constant", "linear" or "cosine" decay over the run's optimizer updates
            (max_steps x updates_per_batch), after the warmup.
        warmup_steps: optimizer updates of linear warmup from 0 to learning_rate.
        min_lr_ratio: the rate at the end of a linear or cosine decay, times learning_rate.
        max_completion_length: cap on generated tokens.
        temperature: sampling temperature of the rollouts.
        top_p: nucleus sampling of the rollouts.
        loss_type: "sequence" (mean over a completion's tokens, then over completions; Video-R1
            and VideoCFR) or "token" (over all completion tokens; TRL 0.16).
    """

    num_generations: int = 8
    beta: float = 0.04
    epsilon: float = 0.2
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 1
    grad_accum_steps: int = 1
    updates_per_batch: int = 1
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    max_completion_length: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    loss_type: str = "sequence"

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"grpo.loss_type {self.loss_type!r} unknown; use one of "
                             f"{LOSS_TYPES}")
        if self.num_generations < 2:
            raise ValueError(f"grpo.num_generations must be >= 2 (advantages are relative to the "
                             f"group), got {self.num_generations}")
        if self.beta < 0 or self.epsilon <= 0 or self.learning_rate <= 0:
            raise ValueError("grpo.beta must be >= 0, grpo.epsilon and grpo.learning_rate > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"grpo.lr_schedule {self.lr_schedule!r} unknown; use one of "
                             f"{LR_SCHEDULES}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"grpo.warmup_steps must be >= 0 and grpo.min_lr_ratio in [0, 1], "
                             f"got {self.warmup_steps} and {self.min_lr_ratio}")
        for name in ("batch_size", "grad_accum_steps", "updates_per_batch",
                     "max_completion_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"grpo.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("grpo.temperature must be > 0 and grpo.top_p in (0, 1]")
        if self.max_grad_norm < 0:
            raise ValueError(f"grpo.max_grad_norm must be >= 0, got {self.max_grad_norm}")


@dataclass
class RewardConfig:
    """The CF-GRPO reward (METHOD §4-5).

    Args:
        cf_lambda: λ, weight of the consensus-frame term.
        gate: "soft" (clip(R_acc, 0, 1)), "hard" (1[R_acc > 0.01], reference code) or "none"
            (always 1: an ablation, the CF term rewards frame usage whatever the answer).
        alignment: "dot" (r_cov = Σ p_g α_g) or "js" (1 - JS(p, α)).
        tau_alpha: τ_α of the softmax over groups in α (0.5, the reference trainer's value).
        format_weight: weight of R_format (1 as in Video-R1).
        answer_mode: "video-r1" (Video-R1's exact answer matching), "lenient" (multiple
            choice also accepts "(B)", "B." and "B. <its option text>") or "final-letter"
            (no tags: the completion's last word is the answer, "red B" -> "B"; the world
            VLM's form); docs/rewards.md.
        temporal: T-GRPO: also sample G/2 completions on the same frames shuffled (not trained
            on) and add 0.3 to R_acc > 0.1 when ordered accuracy >= 0.8 x shuffled accuracy.
        len_control: +0.2 for a completion of 320-512 tokens with R_acc > 0.1.
    """

    cf_lambda: float = 5.0
    gate: str = "soft"
    alignment: str = "dot"
    tau_alpha: float = 0.5
    format_weight: float = 1.0
    answer_mode: str = "video-r1"
    temporal: bool = False
    len_control: bool = False

    def __post_init__(self):
        if self.answer_mode not in ANSWER_MODES:
            raise ValueError(f"reward.answer_mode {self.answer_mode!r} unknown; use one of "
                             f"{ANSWER_MODES}")
        if self.gate not in GATES:
            raise ValueError(f"reward.gate {self.gate!r} unknown; use one of {GATES}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"reward.alignment {self.alignment!r} unknown; use one of "
                             f"{ALIGNMENTS}")
        if self.tau_alpha <= 0 or self.cf_lambda < 0:
            raise ValueError("reward.tau_alpha must be > 0 and reward.cf_lambda >= 0")


@dataclass
class RolloutConfig:
    """How rollouts are sampled and how the forwards see the video (train.engines).

    Args:
        engine: "shared_prefill" (one prefill of each prompt, vision tower included, its KV
            cache shared by the G completions) or "generate" (HF generate: the prompt prefilled
            G times); see train.engines for what another engine must honour.
        vision_once: the policy and reference forwards run the vision tower once per prompt
            and share its embeddings among the G rows (false: once per row).
    """

    engine: str = "shared_prefill"
    vision_once: bool = True

    def __post_init__(self):
        from .engines import ENGINES  # noqa: PLC0415  (the registry is the one list of names)

        if self.engine not in ENGINES:
            raise ValueError(f"rollout.engine {self.engine!r} unknown; use one of "
                             f"{sorted(ENGINES)}")


@dataclass
class RunConfig:
    """How the run is driven and where it writes.

    Args:
        max_steps: steps (one step = grpo.grad_accum_steps micro-batches of prompts, their
            rollouts and grpo.updates_per_batch optimizer updates).
        output_dir: run directory (checkpoints, metrics.jsonl, tensorboard/).
        checkpoint_every: save every N steps (0: only at the end).
        keep_checkpoints: how many recent checkpoints to keep (0: all).
        log_every: write metrics every N steps.
        log_completions: also write every completion of rank 0 with its (video, question),
            R_acc, CF term and frame usage α to completions.jsonl (which frames the policy used).
        seed: seeds python, numpy and torch (per rank: seed + rank for sampling).
        deepspeed: path of a DeepSpeed JSON config; null trains without DeepSpeed.
        device: "auto" (cuda when present), "cpu" or "cuda".
        tensorboard: also write TensorBoard events.
    """

    max_steps: int = 100
    output_dir: str = "runs/cfgrpo"
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    log_completions: bool = False
    seed: int = 0
    deepspeed: str | None = None
    device: str = "auto"
    tensorboard: bool = True

    def __post_init__(self):
        if self.max_steps < 1 or self.log_every < 1:
            raise ValueError("run.max_steps and run.log_every must be >= 1")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 0:
            raise ValueError("run.checkpoint_every and run.keep_checkpoints must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"run.device {self.device!r} unknown; use auto, cpu or cuda")


@dataclass
class TrainConfig:
    """The whole CF-GRPO run; see the section classes for each field."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(tiny=True))
    data: DataConfig = field(default_factory=DataConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        """Build from nested plain data; unknown sections or keys raise ValueError naming them."""
        return cls(**build_sections(_SECTION_TYPES, data, where))


_SECTION_TYPES = {"model": ModelConfig, "data": DataConfig, "grpo": GRPOConfig,
                  "reward": RewardConfig, "rollout": RolloutConfig, "run": RunConfig}


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
                ) -> TrainConfig:
    """Read a YAML config and apply `section.key=value` overrides.

    Args:
        path: YAML file; None starts from the defaults.
        overrides: strings like "grpo.beta=0", "run.output_dir=/tmp/run".

    Returns:
        The validated TrainConfig.
    """
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        data = read_yaml_mapping(path, "train config", "configs/train/")
        where = str(path)
    given = apply_overrides(data, overrides)
    if ("model", "path") in given and ("model", "tiny") not in given:
        data["model"]["tiny"] = False  # `model.path=...` on a tiny config means "use this model"
    return TrainConfig.from_dict(data, where)
