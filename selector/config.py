"""The selector trainer's configuration: nested dataclasses loaded from YAML.

A selector YAML has `trainer: selector` at the top (that is how `videocfr train` tells it from a
CF-GRPO config) and the sections `policy`, `data`, `reward`, `grpo`, `run`. Unknown keys are
errors naming the key; overrides on the command line are `section.key=value`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from videocfr.cache_format.config_sections import (
    apply_overrides,
    check_keys,
    check_sections,
    read_yaml_mapping,
)

from .policy import PolicyConfig

REWARD_KINDS = ("margin", "needle")
TRAINER_NAME = "selector"


@dataclass
class SelectorDataConfig:
    """Which questions to train on.

    Args:
        cache_dir: a finished precompute cache.
        video_root: directory the cache's video paths are relative to (margin reward only;
            None: the cache config's).
        annotation: optional dataset JSON/JSONL whose records carry `needle_frames` [start, end)
            (file frame numbers): gives the hit rate metric and the needle reward.
        min_margin_var: drop questions whose Var(m) over the `margins` addition's subsets is
            below this (0.21 in the paper); null trains on all and needs no addition.
        max_questions: use only the first N questions (None: all).
    """

    cache_dir: str = "caches/demo"
    video_root: str | None = None
    annotation: str | None = None
    min_margin_var: float | None = 0.21
    max_questions: int | None = None

    def __post_init__(self):
        if self.min_margin_var is not None and self.min_margin_var < 0:
            raise ValueError(f"data.min_margin_var must be >= 0 or null, got "
                             f"{self.min_margin_var}")
        if self.max_questions is not None and self.max_questions < 1:
            raise ValueError(f"data.max_questions must be >= 1 or null, got {self.max_questions}")


@dataclass
class SelectorRewardConfig:
    """The reward.

    Args:
        kind: "margin" (frozen VLM, r = tanh(m/2)) or "needle" (1 when a chosen candidate lies in
            the annotated needle frames; needs data.annotation).
        model_path: the reward VLM (a Qwen2.5-VL checkpoint directory or hub id) for "margin".
        tiny: use the scorer's tiny random model instead (tests, demo).
        device: "auto", "cpu" or "cuda".
        dtype: "auto", "bfloat16", "float32".
        batch_size: subsets scored per scorer call.
        margin_scale: r = tanh(m / margin_scale) (2 in the paper).
    """

    kind: str = "margin"
    model_path: str | None = None
    tiny: bool = False
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    margin_scale: float = 2.0

    def __post_init__(self):
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"reward.kind {self.kind!r} unknown; use one of {REWARD_KINDS}")
        if self.kind == "margin" and self.tiny == (self.model_path is not None):
            raise ValueError("reward: for kind margin set exactly one of reward.model_path (a "
                             "Qwen2.5-VL checkpoint) or reward.tiny: true")
        if self.batch_size < 1 or self.margin_scale <= 0:
            raise ValueError("reward.batch_size must be >= 1 and reward.margin_scale > 0")

    def vlm_spec(self) -> str | None:
        """The VLM training names: "tiny" (reward.tiny), reward.model_path, or None."""
        return "tiny" if self.tiny else self.model_path


@dataclass
class SelectorGRPOConfig:
    """GRPO over sampled subsets.

    Args:
        num_samples: N subsets sampled per question (the group).
        batch_size: questions per step.
        budgets: the curriculum's frame budgets n (4 → 8 → 16 → 32).
        milestones: the step (0-based) where each budget starts; first 0, ascending.
        learning_rate, weight_decay: AdamW.
        epsilon: clip range of the ratio.
        entropy_coef: weight of the entropy bonus (in place of a KL term).
        updates_per_batch: optimizer updates on one batch of rollouts.
        max_grad_norm: gradient clipping (0: none).
    """

    num_samples: int = 8
    batch_size: int = 8
    budgets: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    milestones: list[int] = field(default_factory=lambda: [0, 500, 1000, 1500])
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    epsilon: float = 0.2
    entropy_coef: float = 0.01
    updates_per_batch: int = 1
    max_grad_norm: float = 1.0

    def __post_init__(self):
        if self.num_samples < 2:
            raise ValueError("grpo.num_samples must be >= 2 (advantages are relative to the "
                             "group)")
        if self.batch_size < 1 or self.updates_per_batch < 1:
            raise ValueError("grpo.batch_size and grpo.updates_per_batch must be >= 1")
        if not self.budgets or len(self.budgets) != len(self.milestones):
            raise ValueError(f"grpo.budgets {self.budgets} and grpo.milestones "
                             f"{self.milestones} must be non-empty lists of the same length")
        if self.milestones[0] != 0 or any(b <= a for a, b in zip(self.milestones,
                                                                  self.milestones[1:])):
            raise ValueError(f"grpo.milestones {self.milestones} must start at 0 and increase")
        if min(self.budgets) < 1:
            raise ValueError(f"grpo.budgets {self.budgets} must all be >= 1")
        if self.learning_rate <= 0 or self.epsilon <= 0 or self.entropy_coef < 0:
            raise ValueError("grpo.learning_rate and grpo.epsilon must be > 0, "
                             "grpo.entropy_coef >= 0")


@dataclass
class SelectorRunConfig:
    """How the run is driven.

    Args:
        max_steps: GRPO steps.
        output_dir: run directory (checkpoints/, metrics.jsonl, tensorboard/).
        checkpoint_every: save every N steps (0: only at the end).
        keep_checkpoints: newest checkpoints kept (0: all).
        log_every: write metrics every N steps.
        seed: seeds the policy init, the question order and the rollouts.
        device: "auto", "cpu" or "cuda" (of the policy; the scorer has reward.device).
        tensorboard: also write TensorBoard events.
        threads: torch CPU threads (0: torch's default).
    """

    max_steps: int = 2000
    output_dir: str = "runs/refocus"
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    device: str = "auto"
    tensorboard: bool = True
    threads: int = 0

    def __post_init__(self):
        if self.max_steps < 1 or self.log_every < 1:
            raise ValueError("run.max_steps and run.log_every must be >= 1")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 0 or self.threads < 0:
            raise ValueError("run.checkpoint_every, run.keep_checkpoints, run.threads >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"run.device {self.device!r} unknown; use auto, cpu or cuda")


_SECTIONS = {"policy": PolicyConfig, "data": SelectorDataConfig, "reward": SelectorRewardConfig,
             "grpo": SelectorGRPOConfig, "run": SelectorRunConfig}


@dataclass
class SelectorTrainConfig:
    """The whole selector run. `policy.embed_dim` null takes the cache's D."""

    policy: dict = field(default_factory=dict)
    data: SelectorDataConfig = field(default_factory=SelectorDataConfig)
    reward: SelectorRewardConfig = field(default_factory=lambda: SelectorRewardConfig(tiny=True))
    grpo: SelectorGRPOConfig = field(default_factory=SelectorGRPOConfig)
    run: SelectorRunConfig = field(default_factory=SelectorRunConfig)

    def policy_config(self, embed_dim: int) -> PolicyConfig:
        """The PolicyConfig with D from the cache (an explicit different D is an error)."""
        values = dict(self.policy)
        given = values.pop("embed_dim", None)
        if given is not None and int(given) != embed_dim:
            raise ValueError(f"policy.embed_dim={given} but the cache's embeddings have "
                             f"D={embed_dim}; drop policy.embed_dim")
        return PolicyConfig(embed_dim=embed_dim, **values)

    def to_dict(self) -> dict[str, Any]:
        return {"trainer": TRAINER_NAME, **dataclasses.asdict(self)}


def is_selector_config(path: str | Path) -> bool:
    """True when a train YAML says `trainer: selector` (read cheaply, for the CLI's routing)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("trainer") == TRAINER_NAME


def load_selector_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
                         ) -> SelectorTrainConfig:
    """Read a selector YAML and apply `section.key=value` overrides; validate everything."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        data = dict(read_yaml_mapping(path, "train config", "configs/train/"))
        where = str(path)
    trainer = data.pop("trainer", TRAINER_NAME)
    if trainer != TRAINER_NAME:
        raise ValueError(f"{where}: trainer {trainer!r} is not the selector trainer")
    apply_overrides(data, overrides)
    check_sections(_SECTIONS, data, where, note=" (and trainer: selector)")
    kwargs = {}
    for name, values in data.items():
        values = check_keys(_SECTIONS[name], values, name, where)
        if name == "policy":
            PolicyConfig(**{**values, "embed_dim": values.get("embed_dim") or 1})  # validate
            kwargs[name] = values
        else:
            kwargs[name] = _SECTIONS[name](**values)
    if "reward" not in kwargs:
        raise ValueError(f"{where}: a `reward` section is required (kind margin with a model_path "
                         f"or tiny: true, or kind needle)")
    return SelectorTrainConfig(**kwargs)
