"""CF-GRPO: GRPO on a Video-MLLM with a reward for using the frames the cached prior points at.

One step, top to bottom (`train` below):
1. take B (video, question) pairs of the cache; decode exactly the cached frames;
2. sample G completions per prompt with HF generate;
3. ONE forward of the policy on prompt + completion, with output_hidden_states: the completion
   log-probs (for the loss) and the last layer's hidden states (for α) come from the same pass;
4. reward R = R_acc + R_format + λ·gate(R_acc)·r_cov, r_cov between α and the prior looked up in
   the in-memory PriorTable (O(1); no CLIP, no decode, no extra forward);
5. group-normalised advantages, token-level clipped loss + β·KL_k3 (reference forward only when
   β > 0), `updates_per_batch` optimizer updates (the first reuses the forward of step 3).

Left out of GRPO as TRL implements it: vLLM rollouts, reward models, entropy bonus, asymmetric
clipping, DAPO/Dr.GRPO normalisations, LR schedules and warmup, gradient accumulation over
micro-batches (one step = one batch), reference model syncing, prompt truncation (a prompt
never loses video tokens; set model.video_max_pixels to bound its length), multi-video prompts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from cache_format import PriorTable

from .alpha import alpha_entropy, frame_usage, video_group_spans
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import CacheSamples, batch_indices, process
from .grpo import group_advantages, grpo_loss
from .metrics import MetricsWriter, read_metrics, reduce_metrics
from .rewards import AccuracyReward, ConsensusFrameReward, FormatReward
from .rollout import generate_rollouts, policy_forward

log = logging.getLogger(__name__)


# --- setup -----------------------------------------------------------------------------------


def init_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """Start torch.distributed under DeepSpeed (gloo on CPU, nccl on GPU).

    Returns:
        (rank, world_size, device).
    """
    use_cuda = cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available())
    if cfg.run.deepspeed is None:
        return 0, 1, torch.device("cuda" if use_cuda else "cpu")
    import deepspeed  # noqa: PLC0415

    deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def deepspeed_config(path: str, cfg: TrainConfig, world_size: int) -> dict:
    """Read a DeepSpeed JSON config and fill its "auto" values from the train config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config {path} not found (run.deepspeed); see "
                                f"configs/deepspeed/zero3.json")
    ds = json.loads(path.read_text())
    fill = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
            "train_batch_size": world_size, "gradient_clipping": cfg.grpo.max_grad_norm}
    for key, value in fill.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    if ds.get("bf16", {}).get("enabled") == "auto":
        ds["bf16"]["enabled"] = cfg.model.bf16
    if "optimizer" in ds:
        raise ValueError(f"{path}: remove the 'optimizer' section; the trainer passes its own "
                         f"AdamW (grpo.learning_rate) to deepspeed.initialize")
    return ds


def load_policy(cfg: TrainConfig):
    """The policy model (train mode) and its processor, from a checkpoint path or tiny."""
    dtype = torch.bfloat16 if cfg.model.bf16 else torch.float32
    if cfg.model.tiny:
        from .tiny import tiny_model_and_processor  # noqa: PLC0415

        model, processor = tiny_model_and_processor(cfg.model.tiny_seed)
        model = model.to(dtype)
    else:
        from transformers import (  # noqa: PLC0415
            AutoProcessor,
            Qwen2_5_VLForConditionalGeneration,
        )

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            cfg.model.path, dtype=dtype, attn_implementation=cfg.model.attn_implementation)
        processor = AutoProcessor.from_pretrained(cfg.model.path)
    size = dict(processor.video_processor.size)
    if cfg.model.video_max_pixels is not None:
        size["longest_edge"] = cfg.model.video_max_pixels
    if cfg.model.video_min_pixels is not None:
        size["shortest_edge"] = cfg.model.video_min_pixels
    processor.video_processor.size = size
    processor.tokenizer.padding_side = "left"
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = True
    return model.train(), processor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- the loop --------------------------------------------------------------------------------


def train(cfg: TrainConfig, resume: bool = False,
          extra_rewards: list[Callable[..., list[float | None]]] | None = None) -> Path:
    """Run CF-GRPO for cfg.run.max_steps steps.

    Args:
        cfg: the run's configuration.
        resume: continue from the latest checkpoint in cfg.run.output_dir.
        extra_rewards: more TRL-style rewards `(prompts, completions, **columns) ->
            list[float | None]` added to R (columns: answer, problem_type, video_id,
            question_id); None entries are left out of the sum. Logged as reward/<__name__>.

    Returns:
        Path of the run directory (checkpoints/, metrics.jsonl, tensorboard/, final/).
    """
    rank, world, device = init_distributed(cfg)
    run_dir = Path(cfg.run.output_dir)
    if not resume and ((run_dir / "metrics.jsonl").exists() or latest_checkpoint(run_dir)):
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or "
                              f"--output-dir for a new one")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    seed_everything(cfg.run.seed)  # same initial weights on every rank

    # Data first: a missing cache should fail before minutes of model loading.
    samples = CacheSamples(cfg.data.cache_dir, cfg.data.video_root, cfg.data.expect_config_hash,
                           cfg.data.decode, cfg.data.max_samples)
    if cfg.data.prior_cache_dir is None:
        priors = PriorTable.load(cfg.data.cache_dir, cfg.data.expect_config_hash)
    else:  # another cache (e.g. re-fused), so another config hash
        priors = PriorTable.load(cfg.data.prior_cache_dir)
    log.info("%d (video, question) pairs, %d priors", len(samples), len(priors))

    ds_config = None
    keep_alive = None  # HfDeepSpeedConfig must outlive from_pretrained for ZeRO-3 partitioned load
    if cfg.run.deepspeed is not None:
        ds_config = deepspeed_config(cfg.run.deepspeed, cfg, world)
        if not cfg.model.tiny and ds_config.get("zero_optimization", {}).get("stage") == 3:
            from transformers.integrations import HfDeepSpeedConfig  # noqa: PLC0415

            keep_alive = HfDeepSpeedConfig(ds_config)
    elif world > 1:
        raise ValueError("several processes without run.deepspeed; launch with deepspeed and "
                         "set run.deepspeed=configs/deepspeed/zero3.json")
    model, processor = load_policy(cfg)
    G, beta = cfg.grpo.num_generations, cfg.grpo.beta
    ref = None
    if beta > 0:  # β = 0 loads no reference model at all
        ref, _ = load_policy(cfg)
        ref.eval().requires_grad_(False)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.grpo.learning_rate, weight_decay=cfg.grpo.weight_decay)
    engine = None
    if ds_config is not None:
        import deepspeed  # noqa: PLC0415

        engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                       config=ds_config)
        model = engine.module
        if ref is not None:
            ref_cfg = {k: v for k, v in ds_config.items() if k not in ("optimizer", "scheduler")}
            if ref_cfg.get("zero_optimization", {}).get("stage") != 3:
                ref_cfg["zero_optimization"] = {"stage": 0}
            ref = deepspeed.initialize(model=ref, config=ref_cfg)[0]
            ref.eval()
    else:
        model.to(device)
        if ref is not None:
            ref.to(device)
    del keep_alive
    forward_model = engine if engine is not None else model
    synced = engine is not None and world > 1 and \
        ds_config.get("zero_optimization", {}).get("stage") == 3

    accuracy, formatting = AccuracyReward(), FormatReward()
    cf_reward = ConsensusFrameReward(cfg.reward.cf_lambda, cfg.reward.gate, cfg.reward.alignment,
                                     accuracy)
    video_token_id = model.config.video_token_id
    merge = model.config.vision_config.spatial_merge_size

    start = 0
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {run_dir}/checkpoints")
        start = load_checkpoint(ckpt, model, optimizer, engine=engine, rank=rank)
        log.info("resumed from %s (step %d)", ckpt, start)
    else:
        torch.manual_seed(cfg.run.seed + rank)  # ranks sample different completions
    metrics_out = MetricsWriter(run_dir, enabled=rank == 0, tensorboard=cfg.run.tensorboard)
    if rank == 0 and resume and metrics_out.path.is_file():  # drop rows past the checkpoint
        rows = [r for r in read_metrics(run_dir) if r["step"] <= start]
        metrics_out.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    no_prior_total = 0.0

    steps = tqdm(range(start, cfg.run.max_steps), initial=start, total=cfg.run.max_steps,
                 desc="cf-grpo", disable=rank != 0)
    for step in steps:
        t_step = time.perf_counter()
        # 1. the batch: this rank's slice of the step's pairs, with the cached frames
        idx = batch_indices(len(samples), cfg.grpo.batch_size, step, cfg.run.seed,
                            cfg.data.shuffle, rank, world)
        batch = [samples[i] for i in idx]
        t_cf = time.perf_counter()
        found = [priors.find(*s.key) for s in batch]  # float32 [K] or None: O(1) lookups
        lookup_s = time.perf_counter() - t_cf
        if not cfg.data.allow_missing_prior and any(p is None for p in found):
            missing = [s.key for s, p in zip(batch, found) if p is None]
            raise KeyError(f"no cached prior for {missing[:3]} in "
                           f"{cfg.data.prior_cache_dir or cfg.data.cache_dir}; set "
                           f"data.allow_missing_prior=true to train them without the CF term")
        prompts = process(processor, batch).to(device)

        # 2. rollouts: G completions per prompt (every rank joins every forward under ZeRO-3)
        rollout = generate_rollouts(
            model, processor, prompts, num_generations=G,
            max_new_tokens=cfg.grpo.max_completion_length, temperature=cfg.grpo.temperature,
            top_p=cfg.grpo.top_p, synced_gpus=synced)
        mask = rollout.completion_mask.to(device)  # (B*G, C)

        # 3. the one policy forward: log-probs for the loss AND hidden states for α
        model.train()
        logp, hidden = policy_forward(forward_model, rollout, cfg.grpo.temperature,
                                      hidden_states=True)

        # 4. rewards; the CF part (α + O(1) prior lookup + r_cov) is timed on its own
        t_cf = time.perf_counter()
        spans = video_group_spans(rollout.inputs["input_ids"], rollout.inputs["video_grid_thw"],
                                  video_token_id, merge)
        alphas = frame_usage(hidden, spans, mask, cfg.reward.tau_alpha)  # [G_b] per row
        row_priors = [found[b] for b in rollout.prompt_index.tolist()]
        cf_s = lookup_s + time.perf_counter() - t_cf
        del hidden
        rows = [batch[b] for b in rollout.prompt_index.tolist()]
        columns = {name: [getattr(s, name) for s in rows]
                   for name in ("answer", "problem_type", "video_id", "question_id")}
        r_acc = accuracy(None, rollout.completions, **columns)
        r_fmt = formatting(None, rollout.completions, **columns)
        t_cf = time.perf_counter()
        r_cf = cf_reward(None, rollout.completions, frame_usage=alphas, prior=row_priors,
                         acc_rewards=r_acc, **columns)
        cf_s += time.perf_counter() - t_cf
        extra = {getattr(fn, "__name__", type(fn).__name__): fn(None, rollout.completions,
                                                                **columns)
                 for fn in (extra_rewards or [])}
        # A part that does not apply (None) is left out of the sum, and counted.
        parts = [r_cf, *extra.values()]
        total = [a + cfg.reward.format_weight * f + sum(p[i] for p in parts if p[i] is not None)
                 for i, (a, f) in enumerate(zip(r_acc, r_fmt))]
        rewards = torch.tensor(total, dtype=torch.float32, device=device)  # (B*G,)

        # 5. advantages and updates
        advantages = group_advantages(rewards, G)  # (B*G,)
        ref_logp = None
        if beta > 0:
            with torch.no_grad():
                ref_logp, _ = policy_forward(ref, rollout, cfg.grpo.temperature)
        old_logp = logp.detach()
        stats = []
        for update in range(cfg.grpo.updates_per_batch):
            if update > 0:  # later updates need the current policy's log-probs
                logp, _ = policy_forward(forward_model, rollout, cfg.grpo.temperature)
            loss, loss_stats = grpo_loss(logp, advantages, mask, old_logp=old_logp,
                                         ref_logp=ref_logp, epsilon=cfg.grpo.epsilon, beta=beta)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step + 1}: loss is {loss.item()}; lower "
                                         f"grpo.learning_rate or check the rewards")
            if engine is not None:
                engine.backward(loss)
                engine.step()
            else:
                loss.backward()
                if cfg.grpo.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grpo.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            stats.append({"loss": loss.item(), **loss_stats})
        step_s = time.perf_counter() - t_step

        # 6. metrics, checkpoint
        no_prior = sum(c is None for c in r_cf)
        no_prior_total += no_prior
        ents = [alpha_entropy(a) for a in alphas if a is not None]
        metrics = {
            **{k: float(np.mean([s[k] for s in stats])) for k in stats[0]},
            "reward": float(np.mean(total)), "reward/accuracy": float(np.mean(r_acc)),
            "reward/format": float(np.mean(r_fmt)),
            "reward/cf": _mean([c for c in r_cf if c is not None]),
            "r_cov_mean": cf_reward.last_stats["r_cov_mean"],
            "r_cov_max": cf_reward.last_stats["r_cov_max"],
            **{f"reward/{name}": _mean([v for v in values if v is not None])
               for name, values in extra.items()},
            "alpha_entropy": _mean(ents), "no_prior": float(no_prior),
            "no_prior_total": float(no_prior_total), "samples": float(len(total)),
            "step_s": step_s, "cf_s": cf_s, "cf_share": cf_s / step_s,
        }
        metrics = reduce_metrics(metrics, device if device.type == "cuda" else "cpu")
        if (step + 1) % cfg.run.log_every == 0 or step + 1 == cfg.run.max_steps:
            metrics_out.write(step + 1, metrics)
        steps.set_postfix(loss=f"{metrics['loss']:.4f}", reward=f"{metrics['reward']:.3f}")
        every = cfg.run.checkpoint_every
        if (every and (step + 1) % every == 0) or step + 1 == cfg.run.max_steps:
            save_checkpoint(run_dir, step + 1, model, optimizer, cfg.to_dict(), engine=engine,
                            rank=rank, keep=cfg.run.keep_checkpoints)
    metrics_out.close()
    export_final(run_dir / "final", model, processor, engine, rank)
    return run_dir


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def export_final(path: Path, model, processor, engine, rank: int) -> None:
    """Save the trained policy in Hugging Face format (loadable as model.path)."""
    if engine is not None and engine.zero_optimization_stage() == 3:
        import deepspeed  # noqa: PLC0415

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if rank == 0:
                model.save_pretrained(path)
    elif rank == 0:
        model.save_pretrained(path)
    if rank == 0:
        processor.save_pretrained(path)
        log.info("final policy saved: %s", path)
