"""The ReFoCUS selector trainer: GRPO over sampled frame subsets, from a cache and a reward.

Reads top to bottom: load the questions (with the Var(m) filter), build the policy, optimizer
and reward, resume if asked, then per step: pick the step's budget n from the curriculum, take
the step's questions (those with K < n are skipped and counted), run one GRPO step
(`selector.grpo.grpo_step`), log and checkpoint. Everything it needs is passed in; the
reward can be any callable `(samples, subsets) -> list[float | None]`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from videocfr.train.metrics import MetricsWriter

from .checkpoint import (
    check_embedding_model,
    embedding_model_of,
    latest_checkpoint,
    read_state,
    restore,
    save_checkpoint,
)
from .config import SelectorTrainConfig
from .data import SelectorSample, load_samples, make_batch, step_questions
from .grpo import curriculum_budget, grpo_step
from .margins import vlm_identity
from .policy import FrameSelector
from .rewards import CandidateFrames, MarginReward, NeedleReward, frozen_scorer_class, needle_hits

log = logging.getLogger(__name__)

Reward = Callable[[list[SelectorSample], list[np.ndarray]], list[float | None]]


def build_reward(cfg: SelectorTrainConfig) -> Reward:
    """The configured reward: the frozen scorer's margin, or the needle reward."""
    if cfg.reward.kind == "needle":
        if not cfg.data.annotation:
            raise ValueError("reward.kind needle needs data.annotation (records with "
                             "needle_frames)")
        return NeedleReward()

    from videocfr.cache_format import Cache  # noqa: PLC0415
    from videocfr.vlm.decoders import cache_decoder  # noqa: PLC0415
    from videocfr.vlm.video import resolve_video_root  # noqa: PLC0415

    rc = cfg.reward
    FrozenScorer = frozen_scorer_class()  # noqa: N806
    scorer = (FrozenScorer.tiny(seed=cfg.run.seed) if rc.tiny else
              FrozenScorer.from_pretrained(rc.model_path, device=rc.device, dtype=rc.dtype))
    cache = Cache(cfg.data.cache_dir)
    root = resolve_video_root(cache, cfg.data.video_root)
    frames = CandidateFrames(root, decoder=cache_decoder(cache.config))
    return MarginReward(scorer, frames, scale=rc.margin_scale,
                        batch_size=rc.batch_size)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device is cuda but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def _check_budgets(cfg: SelectorTrainConfig, samples: list[SelectorSample]) -> None:
    kmax = max(s.num_candidates for s in samples)
    for n in cfg.grpo.budgets:
        if n > kmax:
            raise ValueError(f"curriculum budget n={n} exceeds every question's K (largest K = "
                             f"{kmax}); lower grpo.budgets or precompute more candidates")


def _metrics(result, reward, rows: list[SelectorSample], n: int, skipped: int,
             seconds: float) -> dict[str, float]:
    r = result.rewards
    hits = [h for h in needle_hits(rows, list(result.positions)) if h is not None]
    out = {"reward": float(np.nanmean(r)) if np.isfinite(r).any() else math.nan,
           "reward_std": float(np.nanstd(r)) if np.isfinite(r).any() else math.nan,
           "hit_rate": float(np.mean(hits)) if hits else math.nan,
           "entropy": result.entropy, "n": float(n), "loss": result.loss,
           "used_groups": float(result.used_groups), "reward_none_groups":
           float(result.none_groups), "skipped_k_lt_n": float(skipped), "step_s": seconds,
           **{k: float(v) for k, v in result.stats.items()}}
    if hasattr(reward, "failures"):
        out["reward_failures_total"] = float(reward.failures)  # rows the scorer could not score
    margins = getattr(reward, "last_margins", None)
    if margins is not None and len(margins) and np.isfinite(margins).any():
        out["margin"] = float(np.nanmean(margins))
    return out


def train(cfg: SelectorTrainConfig, resume: bool = False, reward: Reward | None = None) -> Path:
    """Run (or resume) a selector training.

    Args:
        cfg: the validated config.
        resume: continue from the latest checkpoint of run.output_dir.
        reward: a reward callable to use instead of the configured one (tests, custom rewards).

    Returns:
        The run directory.
    """
    run_dir = Path(cfg.run.output_dir)
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds checkpoints; pass --resume to continue "
                              f"or choose another --output-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    device = _device(cfg.run.device)

    spec = cfg.reward.vlm_spec()
    samples, counts = load_samples(cfg.data, needles_only=cfg.reward.kind == "needle",
                                   vlm=None if spec is None else vlm_identity(spec))
    _check_budgets(cfg, samples)
    cache_hash, embedding_model = _cache_identity(cfg)
    embed_dim = int(samples[0].video.embeddings.shape[1])
    policy = FrameSelector(cfg.policy_config(embed_dim)).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.grpo.learning_rate,
                                  weight_decay=cfg.grpo.weight_decay)
    generator = torch.Generator(device=device).manual_seed(cfg.run.seed)
    reward = reward if reward is not None else build_reward(cfg)

    start = 0
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: {run_dir} has no complete checkpoint")
        check_embedding_model(read_state(ckpt), cfg.data.cache_dir, embedding_model)
        start = restore(ckpt, policy, optimizer, generator)
        log.info("resumed from %s (step %d)", ckpt, start)
    writer = MetricsWriter(run_dir, tensorboard=cfg.run.tensorboard)
    if start == 0:
        writer.write(0, {f"data_{k}": float(v) for k, v in counts.items()})
    g = cfg.grpo
    try:
        for step in tqdm(range(start, cfg.run.max_steps), desc="selector", unit="step",
                         initial=start, total=cfg.run.max_steps):
            t0 = time.perf_counter()
            n = curriculum_budget(step, g.milestones, g.budgets)
            chosen = [samples[i] for i in step_questions(len(samples), g.batch_size, step,
                                                         cfg.run.seed)]
            usable = [s for s in chosen if s.num_candidates >= n]
            skipped = len(chosen) - len(usable)
            if not usable:
                log.warning("step %d: every question of the batch has K < n=%d; skipped", step, n)
                writer.write(step + 1, {"n": float(n), "skipped_k_lt_n": float(skipped)})
                continue
            rows = [s for s in usable for _ in range(g.num_samples)]
            result = grpo_step(
                policy, optimizer, make_batch(usable).to(device),
                lambda pos, rows=rows: reward(rows, list(pos)), n=n, num_samples=g.num_samples,
                epsilon=g.epsilon, entropy_coef=g.entropy_coef, updates=g.updates_per_batch,
                max_grad_norm=g.max_grad_norm, generator=generator)
            if (step + 1) % cfg.run.log_every == 0:
                writer.write(step + 1, _metrics(result, reward, rows, n, skipped,
                                                time.perf_counter() - t0))
            done = step + 1
            if cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0:
                save_checkpoint(run_dir, done, policy, optimizer, generator, cfg.to_dict(),
                                cache_hash, keep=cfg.run.keep_checkpoints,
                                embedding_model=embedding_model)
        if start < cfg.run.max_steps or latest_checkpoint(run_dir) is None:
            last = latest_checkpoint(run_dir)
            if last is None or not last.name.endswith(f"{cfg.run.max_steps:06d}"):
                save_checkpoint(run_dir, cfg.run.max_steps, policy, optimizer, generator,
                                cfg.to_dict(), cache_hash, keep=cfg.run.keep_checkpoints,
                                embedding_model=embedding_model)
    finally:
        writer.close()
    return run_dir


def _cache_identity(cfg: SelectorTrainConfig) -> tuple[str, dict]:
    """The training cache's config hash and embedding model (recorded in every checkpoint)."""
    from videocfr.cache_format import Cache  # noqa: PLC0415

    cache = Cache(cfg.data.cache_dir)
    return cache.config_hash, embedding_model_of(cache.manifest)
