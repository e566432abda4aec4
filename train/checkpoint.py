"""Checkpoints of a CF-GRPO run: model, optimizer, step and every rank's RNG state.

Layout: `run_dir/checkpoints/step-{N:06d}/` with
- without DeepSpeed: `model.safetensors`, `optimizer.pt`;
- with DeepSpeed: the engine's own checkpoint (`ds/`, partitioned ZeRO states of every rank);
- `rng-rank{r}.pt` per rank (python, numpy, torch, cuda generators);
- `state.json` (step, config) written last by rank 0: a checkpoint without it is incomplete and
  is ignored by `latest_checkpoint`.
Optimizer and RNG files are pickles written by this trainer for itself (never part of a cache).

The layout helpers (`checkpoint_dir`, `latest_checkpoint`, `commit_state`, `rng_state`,
`set_rng_state`) are shared with the ReFoCUS selector's checkpoints (videocfr.selector).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

STATE_NAME = "state.json"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    root = Path(run_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / STATE_NAME).is_file())
    return done[-1] if done else None


def commit_state(path: Path, state: dict, keep: int = 0) -> None:
    """Write a checkpoint's state.json last (temp file + rename: its commit point), then keep
    only the newest `keep` complete checkpoints of its run (0: all)."""
    tmp = path / f".{STATE_NAME}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path / STATE_NAME)
    if keep:
        done = sorted(p for p in path.parent.glob("step-*") if (p / STATE_NAME).is_file())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_checkpoint(run_dir: str | Path, step: int, model, optimizer, config: dict, *,
                    engine=None, rank: int = 0, keep: int = 0) -> Path:
    """Save a checkpoint after `step` steps; every rank must call it.

    Args:
        run_dir: the run directory.
        step: steps done.
        model: the policy (unwrapped) when training without DeepSpeed.
        optimizer: its optimizer (without DeepSpeed).
        config: the run's TrainConfig as a dict (stored in state.json).
        engine: the DeepSpeed engine (then model/optimizer are saved through it).
        rank: this process's rank (rank 0 writes the shared files).
        keep: keep the newest `keep` checkpoints (0: all).

    Returns:
        the checkpoint directory.
    """
    from safetensors.torch import save_model  # noqa: PLC0415

    path = checkpoint_dir(run_dir, step)
    path.mkdir(parents=True, exist_ok=True)
    if engine is not None:
        engine.save_checkpoint(str(path), tag="ds", client_state={"step": step})
    elif rank == 0:
        save_model(model, str(path / "model.safetensors"))
        torch.save(optimizer.state_dict(), path / "optimizer.pt")
    torch.save(rng_state(), path / f"rng-rank{rank}.pt")
    _barrier()
    if rank == 0:
        commit_state(path, {"step": step, "config": config}, keep=keep)
    _barrier()
    log.info("checkpoint saved: %s", path)
    return path


def load_checkpoint(path: str | Path, model, optimizer, *, engine=None, rank: int = 0) -> int:
    """Restore a checkpoint written by save_checkpoint; returns the steps done.

    Args:
        path: a checkpoint directory (with state.json).
        model, optimizer: the freshly built policy and optimizer (without DeepSpeed).
        engine: the DeepSpeed engine (with DeepSpeed).
        rank: this process's rank (its own RNG file is loaded).

    Returns:
        int, the step the checkpoint was taken after.
    """
    from safetensors.torch import load_model  # noqa: PLC0415

    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint ({STATE_NAME} missing)")
    step = int(json.loads(state_file.read_text())["step"])
    if engine is not None:
        loaded, _ = engine.load_checkpoint(str(path), tag="ds")
        if loaded is None:
            raise FileNotFoundError(f"{path}: no DeepSpeed checkpoint (ds/); was the run "
                                    f"started without run.deepspeed?")
    else:
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: model.safetensors missing; was the run started "
                                    f"with run.deepspeed? then resume with the same config")
        load_model(model, str(path / "model.safetensors"))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        log.warning("%s missing (different number of ranks?); RNG not restored", rng_file)
    return step
