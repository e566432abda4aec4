"""The phases of one CF-GRPO step, in the order `train.trainer.train` runs them.

    per micro-batch (grpo.grad_accum_steps of them):
        load_batch -> rollouts -> shuffled_rollouts -> policy_pass -> score
        -> reference_forward -> backward
    later_updates (grpo.updates_per_batch > 1) -> log_step

Each phase is a function of the run's state (`Run`, built once by the trainer) and of what the
earlier phases returned; each adds its wall time to the step's `timings` under its own name
(`<name>_s` in the metrics). The CF term's own cost (prior lookup, α, r_cov) is summed in
`cf_s` across the phases it touches.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from videocfr.cache_format import PriorTable
from videocfr.vlm.alpha import alpha_entropy, frame_usage, video_group_spans

from .checkpoint import save_checkpoint
from .config import TrainConfig
from .data import Sample, process
from .engines import Sampling, make_engine
from .grpo import group_advantages, grpo_loss
from .loader import LoadedBatch
from .metrics import MetricsWriter, merge_metrics, reduce_metrics
from .optim import Accumulator, schedule_lr, set_lr
from .rollout import Rollout, policy_forward
from .scoring import StepRewards, StepScores
from .temporal import shuffle_sample_frames

REWARD_COLUMNS = ("answer", "problem_type", "options", "video_id", "question_id")


@dataclass
class Run:
    """What every step reads: the models, the data and where to write (built by the trainer).

    Args:
        model: the unwrapped policy (generate, train/eval switches, checkpoints).
        forward_model: what runs the training forward and backward (DeepSpeed engine or model).
        engine: the DeepSpeed engine, or None.
        ref: the reference model (None when grpo.beta == 0).
        synced_gpus: generate with synced_gpus (ZeRO-3 with > 1 rank).
        batches: this rank's micro-batches from the run's start (train.loader).
        accumulator: backward passes and optimizer updates (train.optim).
    """

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    model: Any
    forward_model: Any
    engine: Any
    optimizer: Any
    ref: Any
    processor: Any
    priors: PriorTable
    rewards: StepRewards
    synced_gpus: bool
    metrics_out: MetricsWriter
    run_dir: Path
    batches: Iterator[LoadedBatch]
    accumulator: Accumulator
    no_prior_total: float = 0.0


@dataclass
class Batch:
    """This rank's prompts of a step: samples (decoded frames), cached priors, prompt tensors."""

    indices: list[int]
    samples: list[Sample]
    priors: list[np.ndarray | None]
    prompts: Any


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to timings[name] (seconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def load_batch(run: Run, timings: dict[str, float]) -> Batch:
    """The next micro-batch of this rank: decoded frames, prompts (train.loader), priors.

    With data.num_workers > 0 the batch was prepared in the background; `data` then times only
    the wait for it (and the copy to the device).
    """
    cfg = run.cfg
    with timed(timings, "data"):
        loaded = next(run.batches)
    with timed(timings, "cf"):
        found = [run.priors.find(*s.key) for s in loaded.samples]  # float32 [K] or None: O(1)
    if not cfg.data.allow_missing_prior and any(p is None for p in found):
        missing = [s.key for s, p in zip(loaded.samples, found) if p is None]
        raise KeyError(f"no cached prior for {missing[:3]} in "
                       f"{cfg.data.prior_cache_dir or cfg.data.cache_dir}; set "
                       f"data.allow_missing_prior=true to train them without the CF term")
    with timed(timings, "data"):
        prompts = loaded.prompts.to(run.device)
    return Batch(indices=loaded.indices, samples=loaded.samples, priors=found, prompts=prompts)


def sample_rollouts(run: Run, prompts, num_generations: int) -> Rollout:
    """G completions per prompt from the configured engine (rollout.engine, train.engines)."""
    g = run.cfg.grpo
    sampling = Sampling(max_new_tokens=g.max_completion_length, temperature=g.temperature,
                        top_p=g.top_p)
    return make_engine(run.cfg.rollout.engine).rollout(
        run.model, run.processor, prompts, num_generations=num_generations, sampling=sampling,
        synced_gpus=run.synced_gpus)


def rollouts(run: Run, batch: Batch, timings: dict[str, float]) -> Rollout:
    """G completions per prompt (every rank joins every forward under ZeRO-3)."""
    with timed(timings, "rollout"):
        return sample_rollouts(run, batch.prompts, run.cfg.grpo.num_generations)


def shuffled_rollouts(run: Run, batch: Batch, step: int, timings: dict[str, float]
                      ) -> Rollout | None:
    """T-GRPO: G // 2 completions per prompt on its frames in a seeded random order.

    Scored only, never trained on. None when reward.temporal is off. The order is a function of
    (run.seed, step, sample index), so a resumed run shuffles as the original did.
    """
    if not run.cfg.reward.temporal:
        return None
    with timed(timings, "shuffled_rollout"):
        shuffled = [shuffle_sample_frames(s, (run.cfg.run.seed, step, i))
                    for s, i in zip(batch.samples, batch.indices)]
        prompts = process(run.processor, shuffled).to(run.device)
        if not torch.equal(prompts["video_grid_thw"], batch.prompts["video_grid_thw"]):
            raise RuntimeError("shuffling the frames changed the video grid; the processor must "
                               "see the same frame count and size in both orders")
        return sample_rollouts(run, prompts, max(1, run.cfg.grpo.num_generations // 2))


def policy_pass(run: Run, rollout: Rollout, timings: dict[str, float]
                ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The one policy forward: completion log-probs (for the loss) and α (for the CF term).

    Returns:
        logp float32 [B*G, C] (with grad), α per completion (float [G_t]).
    """
    run.model.train()
    with timed(timings, "policy_forward"):
        logp, hidden = policy_forward(run.forward_model, rollout, run.cfg.grpo.temperature,
                                      hidden_states=True,
                                      vision_once=run.cfg.rollout.vision_once)
    with timed(timings, "cf"):
        cfg = run.model.config
        spans = video_group_spans(rollout.inputs["input_ids"], rollout.row_grid,
                                  cfg.video_token_id, cfg.vision_config.spatial_merge_size)
        mask = rollout.completion_mask.to(logp.device)
        alphas = frame_usage(hidden, spans, mask, run.cfg.reward.tau_alpha)
    del hidden
    return logp, alphas


def _columns(batch: Batch, rollout: Rollout) -> dict[str, list]:
    rows = [batch.samples[b] for b in rollout.prompt_index.tolist()]
    return {name: [getattr(s, name) for s in rows] for name in REWARD_COLUMNS}


def score(run: Run, batch: Batch, rollout: Rollout, shuffled: Rollout | None,
          alphas: list, timings: dict[str, float]) -> tuple[StepScores, torch.Tensor]:
    """Every reward term (train.scoring) and the group-normalised advantages [B*G]."""
    with timed(timings, "rewards"):
        row_priors = [batch.priors[b] for b in rollout.prompt_index.tolist()]
        scores = run.rewards(
            rollout.completions, _columns(batch, rollout), frame_usage=alphas, priors=row_priors,
            lengths=rollout.completion_mask.sum(dim=1).long().tolist(),
            num_generations=run.cfg.grpo.num_generations,
            shuffled=None if shuffled is None else shuffled.completions,
            shuffled_columns=None if shuffled is None else _columns(batch, shuffled),
            num_shuffled=0 if shuffled is None else len(shuffled.completions) // len(batch.samples))
        rewards = torch.tensor(scores.total, dtype=torch.float32, device=run.device)  # (B*G,)
        advantages = group_advantages(rewards, run.cfg.grpo.num_generations)
    timings["cf"] = timings.get("cf", 0.0) + run.rewards.cf_seconds  # r_cov of this batch
    return scores, advantages


def reference_forward(run: Run, rollout: Rollout, timings: dict[str, float]
                      ) -> torch.Tensor | None:
    """log π_ref of the completion tokens, float32 [B*G, C]; None when grpo.beta == 0."""
    if run.ref is None:
        return None
    with timed(timings, "reference_forward"), torch.no_grad():
        return policy_forward(run.ref, rollout, run.cfg.grpo.temperature,
                              vision_once=run.cfg.rollout.vision_once)[0]


@dataclass
class Trained:
    """What later updates of a step need of one micro-batch (all detached)."""

    rollout: Rollout
    advantages: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor | None


def backward(run: Run, rollout: Rollout, logp: torch.Tensor, advantages: torch.Tensor,
             old_logp: torch.Tensor, ref_logp: torch.Tensor | None, step: int,
             timings: dict[str, float]) -> dict[str, float]:
    """The clipped GRPO loss of one micro-batch, backpropagated (train.optim.Accumulator).

    Returns:
        the loss and its metrics.
    """
    g = run.cfg.grpo
    with timed(timings, "update"):
        mask = rollout.completion_mask.to(logp.device)  # (B*G, C)
        loss, loss_stats = grpo_loss(logp, advantages, mask, old_logp=old_logp,
                                     ref_logp=ref_logp, epsilon=g.epsilon, beta=g.beta,
                                     loss_type=g.loss_type)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step + 1}: loss is {loss.item()}; lower "
                                     f"grpo.learning_rate or check the rewards")
        run.accumulator.backward(loss)
    return {"loss": loss.item(), **loss_stats}


def set_update_lr(run: Run, step: int, update: int) -> float:
    """Set the learning rate of the step's `update`-th optimizer update (train.optim)."""
    g = run.cfg.grpo
    lr = schedule_lr(g, step * g.updates_per_batch + update,
                     run.cfg.run.max_steps * g.updates_per_batch)
    set_lr(run.optimizer, lr)
    return lr


def later_updates(run: Run, trained: list[Trained], step: int, timings: dict[str, float]
                  ) -> list[dict[str, float]]:
    """Updates 2..grpo.updates_per_batch on the step's rollouts: a new policy forward per
    micro-batch (ρ != 1 now), its loss backpropagated, one optimizer update per pass.

    Returns:
        the loss metrics of each micro-batch of each update.
    """
    stats = []
    for update in range(1, run.cfg.grpo.updates_per_batch):
        set_update_lr(run, step, update)
        for t in trained:
            with timed(timings, "policy_forward"):
                logp, _ = policy_forward(run.forward_model, t.rollout, run.cfg.grpo.temperature,
                                         vision_once=run.cfg.rollout.vision_once)
            stats.append(backward(run, t.rollout, logp, t.advantages, t.old_logp, t.ref_logp,
                                  step, timings))
    return stats


def log_step(run: Run, step: int, scores: list[StepScores], alphas: list,
             stats: list[dict[str, float]], timings: dict[str, float], lr: float
             ) -> dict[str, float]:
    """Reduce the step's metrics over ranks, write them (rank 0) and save a checkpoint when due.

    Returns:
        the reduced metrics.
    """
    cfg = run.cfg
    reward_metrics = merge_metrics([s.metrics for s in scores])
    run.no_prior_total += reward_metrics["no_prior"]
    ents = [alpha_entropy(a) for a in alphas if a is not None]
    step_s = timings["step"]
    metrics = {
        **{k: float(np.mean([s[k] for s in stats])) for k in stats[0]},
        **reward_metrics,
        "alpha_entropy": float(np.mean(ents)) if ents else math.nan,
        "no_prior_total": run.no_prior_total,
        "samples": float(sum(len(s.total) for s in scores)), "lr": lr,
        **{f"{name}_s": seconds for name, seconds in timings.items()},
        "cf_share": timings.get("cf", 0.0) / step_s,
    }
    metrics = reduce_metrics(metrics, run.device if run.device.type == "cuda" else "cpu")
    if (step + 1) % cfg.run.log_every == 0 or step + 1 == cfg.run.max_steps:
        run.metrics_out.write(step + 1, metrics)
    every = cfg.run.checkpoint_every
    if (every and (step + 1) % every == 0) or step + 1 == cfg.run.max_steps:
        save_checkpoint(run.run_dir, step + 1, run.model, run.optimizer, cfg.to_dict(),
                        engine=run.engine, rank=run.rank, keep=cfg.run.keep_checkpoints)
    return metrics
