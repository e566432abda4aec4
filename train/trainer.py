"""CF-GRPO: GRPO on a Video-MLLM with a reward for using the frames the cached prior points at.

One step is a list of phases (train.phases; `train` below reads as that list):
1. load_batch: B (video, question) pairs of the cache, exactly the cached frames decoded (ahead
   of time, train.loader), and their priors looked up in the in-memory PriorTable (O(1));
2. rollouts: G completions per prompt from the rollout engine (train.engines; by default one
   prefill per prompt, vision tower included, its KV cache shared by the G completions);
3. shuffled_rollouts (reward.temporal): G/2 more on the same frames shuffled, scored only;
4. policy_pass: ONE forward of the policy on prompt + completion with output_hidden_states: the
   completion log-probs (for the loss) and the last layer's hidden states (for α); the vision
   tower runs once per prompt and its embeddings serve the G rows (rollout.vision_once);
5. score: R = R_acc (+ temporal bonus) + R_format (+ length) + λ·gate(R_acc)·r_cov
   (train.scoring; no CLIP, no decode, no extra forward), group-normalised advantages;
6. reference_forward (only when β > 0); 7. backward: clipped loss + β·KL_k3, `loss_type`
   normalisation (the first update reuses step 4's forward; `updates_per_batch` - 1 later
   updates forward again);
8. log_step: metrics over ranks, checkpoint.

With grpo.grad_accum_steps > 1, steps 1-7 run once per micro-batch (each loss is backpropagated
at once) and the optimizer updates once per step (train.optim, which also sets the warmup +
cosine/linear learning rate). Micro-batches are decoded and processed ahead of the step by
data.num_workers background workers (train.loader).

Left out of GRPO as TRL implements it: vLLM rollouts, reward models, entropy bonus, asymmetric
clipping, DAPO/Dr.GRPO normalisations, reference model syncing, prompt truncation (a prompt
never loses video tokens; set model.video_max_pixels to bound its length), multi-video prompts.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm
from videocfr.cache_format import PriorTable

from .checkpoint import latest_checkpoint, load_checkpoint
from .config import TrainConfig
from .data import CacheSamples
from .loader import MicroBatches, batch_loader
from .metrics import MetricsWriter, completion_rows, read_metrics
from .optim import Accumulator
from .phases import (
    Run,
    Trained,
    backward,
    later_updates,
    load_batch,
    log_step,
    policy_pass,
    reference_forward,
    rollouts,
    score,
    set_update_lr,
    shuffled_rollouts,
    timed,
)
from .scoring import StepRewards

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
    accum = cfg.grpo.grad_accum_steps
    fill = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": accum,
            "train_batch_size": accum * world_size, "gradient_clipping": cfg.grpo.max_grad_norm}
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
    from videocfr.vlm.families import family_for_checkpoint, family_named  # noqa: PLC0415

    if cfg.model.tiny:
        family = family_named(cfg.model.tiny_family)
        model, processor = family.tiny(cfg.model.tiny_seed, cfg.model.tiny_shape)
        model = model.to(dtype)
    else:
        from transformers import AutoProcessor  # noqa: PLC0415

        family = family_for_checkpoint(cfg.model.path)
        model = family.from_pretrained(cfg.model.path, dtype=dtype,
                                       attn_implementation=cfg.model.attn_implementation)
        processor = AutoProcessor.from_pretrained(cfg.model.path)
    family.check_engine(cfg.rollout.vision_once, cfg.rollout.engine)
    size = dict(processor.video_processor.size)
    if cfg.model.video_max_pixels is not None:
        size["longest_edge"] = cfg.model.video_max_pixels
    if cfg.model.video_min_pixels is not None:
        size["shortest_edge"] = cfg.model.video_min_pixels
    processor.video_processor.size = size
    processor.tokenizer.padding_side = "left"
    if cfg.model.freeze_vision:
        tower = getattr(getattr(model, "model", None), "visual", None)
        if tower is None:
            raise ValueError(f"model.freeze_vision: {type(model).__name__} has no vision tower "
                             f"at model.visual")
        tower.requires_grad_(False)
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
    """Run CF-GRPO for cfg.run.max_steps steps: each step is the list of phases below.

    Args:
        cfg: the run's configuration.
        resume: continue from the latest checkpoint in cfg.run.output_dir.
        extra_rewards: more TRL-style rewards `(prompts, completions, **columns) ->
            list[float | None]` added to R (columns: answer, problem_type, options, video_id,
            question_id); None entries are left out of the sum. Logged as reward/<__name__>.

    Returns:
        Path of the run directory (checkpoints/, metrics.jsonl, tensorboard/, final/).
    """
    run, start = setup(cfg, resume, extra_rewards or [])
    steps = tqdm(range(start, cfg.run.max_steps), initial=start, total=cfg.run.max_steps,
                 desc="cf-grpo", disable=run.rank != 0)
    for step in steps:
        t: dict[str, float] = {}
        with timed(t, "step"):
            lr = set_update_lr(run, step, 0)
            scores, alphas, stats, trained = [], [], [], []
            for _ in range(cfg.grpo.grad_accum_steps):  # one optimizer update over all of them
                batch = load_batch(run, t)
                rollout = rollouts(run, batch, t)
                shuffled = shuffled_rollouts(run, batch, step, t)  # T-GRPO; None when off
                logp, micro_alphas = policy_pass(run, rollout, t)
                micro_scores, advantages = score(run, batch, rollout, shuffled, micro_alphas, t)
                if cfg.run.log_completions and run.rank == 0:
                    log_completions(run.run_dir, step + 1, batch, rollout, micro_alphas,
                                    micro_scores)
                ref_logp = reference_forward(run, rollout, t)
                old_logp = logp.detach()
                stats.append(backward(run, rollout, logp, advantages, old_logp, ref_logp, step,
                                      t))
                del logp  # frees this micro-batch's graph before the next one's rollouts
                scores.append(micro_scores)
                alphas += micro_alphas
                if cfg.grpo.updates_per_batch > 1:  # kept for the later updates' forwards
                    trained.append(Trained(rollout, advantages, old_logp, ref_logp))
            stats += later_updates(run, trained, step, t)
        metrics = log_step(run, step, scores, alphas, stats, t, lr)
        steps.set_postfix(loss=f"{metrics['loss']:.4f}", reward=f"{metrics['reward']:.3f}",
                          acc=f"{metrics['reward/accuracy']:.3f}",
                          r_cov=f"{metrics['r_cov_mean']:.3f}", cf=f"{metrics['reward/cf']:.3f}")
    run.metrics_out.close()
    export_final(run.run_dir / "final", run.model, run.processor, run.engine, run.rank)
    return run.run_dir


def log_completions(run_dir: Path, step: int, batch, rollout, alphas, scores) -> None:
    """Append the micro-batch's completions to completions.jsonl (metrics.completion_rows)."""
    keys = [batch.samples[b].key for b in rollout.prompt_index.tolist()]
    rows = completion_rows(step, keys, rollout.completions, alphas, scores.accuracy, scores.cf)
    with (run_dir / "completions.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def setup(cfg: TrainConfig, resume: bool, extra_rewards: list) -> tuple[Run, int]:
    """Everything before the first step: data, models, DeepSpeed, rewards, resume, metrics.

    Returns:
        (the run's state, the first step to run).
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
    rewards = StepRewards(cfg.reward, extra_rewards)  # bad reward names fail before loading

    # Data first: a missing cache should fail before minutes of model loading.
    samples = CacheSamples(cfg.data.cache_dir, cfg.data.video_root, cfg.data.expect_config_hash,
                           cfg.data.decode, cfg.data.max_samples, decoder=cfg.data.decoder,
                           prompt=cfg.data.prompt)
    if cfg.data.prior_cache_dir is None:
        priors = PriorTable.load(cfg.data.cache_dir, cfg.data.expect_config_hash)
    else:  # another cache (e.g. re-fused), so another config hash
        priors = PriorTable.load(cfg.data.prior_cache_dir)
    log.info("%d (video, question) pairs, %d priors", len(samples), len(priors))

    model, ref, engine, optimizer, processor, synced = build_models(cfg, world, device)
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
    no_prior_total = 0.0
    if rank == 0 and resume and metrics_out.path.is_file():  # drop rows past the checkpoint
        rows = [r for r in read_metrics(run_dir) if r["step"] <= start]
        metrics_out.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        no_prior_total = float(rows[-1].get("no_prior_total") or 0.0) if rows else 0.0
    accum = cfg.grpo.grad_accum_steps
    micro = MicroBatches(samples, processor, cfg.grpo.batch_size, cfg.run.seed, cfg.data.shuffle,
                         rank, world, first=start * accum,
                         count=(cfg.run.max_steps - start) * accum)
    run = Run(cfg=cfg, rank=rank, world=world, device=device, model=model,
              forward_model=engine if engine is not None else model, engine=engine,
              optimizer=optimizer, ref=ref, processor=processor, priors=priors,
              rewards=rewards, synced_gpus=synced, metrics_out=metrics_out, run_dir=run_dir,
              batches=batch_loader(micro, cfg.data.num_workers, cfg.data.prefetch_factor),
              accumulator=Accumulator(model, optimizer, engine, accum, cfg.grpo.max_grad_norm),
              no_prior_total=no_prior_total)
    return run, start


def build_models(cfg: TrainConfig, world: int, device: torch.device):
    """The policy, the reference (β > 0), the optimizer, and DeepSpeed around them.

    Returns:
        (model, ref, engine, optimizer, processor, synced_gpus): `model` is the unwrapped
        policy; `engine` the DeepSpeed engine or None; synced_gpus is True under ZeRO-3 with
        more than one rank (every rank must join every forward of generate).
    """
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
    ref = None
    if cfg.grpo.beta > 0:  # β = 0 loads no reference model at all
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
    synced = engine is not None and world > 1 and \
        ds_config.get("zero_optimization", {}).get("stage") == 3
    return model, ref, engine, optimizer, processor, synced


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
