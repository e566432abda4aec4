"""The optimizer side of a step: the learning-rate schedule and gradient accumulation.

The learning rate is a pure function of the optimizer update number (`lr_at`), set on the
optimizer's parameter groups before each update: a resumed run gets the same rates with no
scheduler state to save.

    constant   lr
    linear     lr · warmup, then a straight line down to min_lr_ratio · lr
    cosine     lr · warmup, then a half cosine down to min_lr_ratio · lr

Warmup is linear over the first `warmup_steps` updates and reaches lr on the last of them.

Gradient accumulation: a step runs `grad_accum_steps` micro-batches (each `batch_size` prompts,
its own rollouts and advantages); each one's loss is backpropagated at once (its graph is then
freed) and the optimizer steps once, after the last. So one step is one optimizer update over
`grad_accum_steps x batch_size x world_size` prompts, as in TRL.
"""

from __future__ import annotations

import math

import torch

from .config import LR_SCHEDULES, GRPOConfig


def lr_at(update: int, base_lr: float, schedule: str = "constant", warmup_steps: int = 0,
          total_updates: int = 1, min_lr_ratio: float = 0.0) -> float:
    """The learning rate of optimizer update `update` (0-based).

    Args:
        update: updates done before this one.
        base_lr: the peak rate (grpo.learning_rate).
        schedule: one of config.LR_SCHEDULES.
        warmup_steps: updates of linear warmup (update w < warmup_steps gets (w+1)/warmup · lr).
        total_updates: updates in the whole run (the decay ends at the last one).
        min_lr_ratio: the rate at the end of the decay, as a fraction of base_lr.

    Returns:
        float, the learning rate.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule {schedule!r} unknown; use one of {LR_SCHEDULES}")
    if update < warmup_steps:
        return base_lr * (update + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    decay = max(1, total_updates - warmup_steps - 1)
    progress = min(1.0, (update - warmup_steps) / decay)
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * shape)


def schedule_lr(cfg: GRPOConfig, update: int, total_updates: int) -> float:
    """lr_at with the schedule numbers of a GRPO config."""
    return lr_at(update, cfg.learning_rate, cfg.lr_schedule, cfg.warmup_steps, total_updates,
                 cfg.min_lr_ratio)


def warmup_cosine(optimizer, warmup: int, total: int):
    """A LambdaLR for the world models' trainers: a linear warmup over `warmup` steps times a half
    cosine over all `total` steps (the two multiply; the rate reaches 0 at `total`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5
                                             * (1 + math.cos(math.pi * min(1.0, s / total))))


def warmup(optimizer, steps: int):
    """A LambdaLR for the world models' trainers: a linear warmup over `steps` steps, then
    constant."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / steps))


def clipped_step(optimizer, scheduler, loss, params, max_norm: float = 1.0) -> None:
    """One update of the world models' trainers: backward, the gradient norm clipped to
    `max_norm`, the optimizer's and the scheduler's step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    scheduler.step()


def set_lr(optimizer, lr: float) -> None:
    """Set every parameter group's rate (a DeepSpeed ZeRO optimizer exposes its groups too)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class Accumulator:
    """Backward passes of one optimizer update's micro-batches, then the update.

    With a DeepSpeed engine, the engine scales and counts micro-batches itself (its config's
    gradient_accumulation_steps must equal `micro_batches`); without one, each loss is divided
    by `micro_batches` and the update (clipping, step, zero_grad) runs after the last.

    Args:
        model: the unwrapped policy (its parameters are clipped).
        optimizer: the optimizer (the DeepSpeed one under an engine).
        engine: the DeepSpeed engine, or None.
        micro_batches: backward passes per optimizer update (grpo.grad_accum_steps).
        max_grad_norm: clip the gradient norm to this before the update (0: no clipping).
    """

    def __init__(self, model, optimizer, engine, micro_batches: int, max_grad_norm: float):
        if engine is not None and engine.gradient_accumulation_steps() != micro_batches:
            raise ValueError(f"the DeepSpeed config accumulates "
                             f"{engine.gradient_accumulation_steps()} micro-batches but "
                             f"grpo.grad_accum_steps is {micro_batches}; set "
                             f"gradient_accumulation_steps to \"auto\" in the DeepSpeed JSON")
        self.model, self.optimizer, self.engine = model, optimizer, engine
        self.micro_batches = micro_batches
        self.max_grad_norm = max_grad_norm
        self.pending = 0

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate one micro-batch's loss; after the last one, update the weights."""
        self.pending += 1
        if self.engine is not None:
            self.engine.backward(loss)
            self.engine.step()  # steps only at the accumulation boundary
        else:
            (loss / self.micro_batches).backward()
            if self.pending == self.micro_batches:
                if self.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        if self.pending == self.micro_batches:
            self.pending = 0
