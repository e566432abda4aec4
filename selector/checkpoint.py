"""Selector checkpoints: `run_dir/checkpoints/step-{N:06d}/`.

Files: `policy.safetensors` (weights), `optimizer.pt` and `rng.pt` (pickles this trainer writes
for itself, loaded only by `--resume`), and `state.json` written last (step, architecture name,
policy config, train config, the cache's config hash and its embedding model). Loading a policy
for inference reads only state.json and the safetensors file, and refuses a checkpoint of another
architecture or of other shapes with a message saying what it found; `check_embedding_model`
refuses to run a checkpoint on a cache whose embeddings come from another CLIP model than the
training cache's, naming both.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from videocfr.train.checkpoint import STATE_NAME as STATE
from videocfr.train.checkpoint import (
    checkpoint_dir,
    commit_state,
    latest_checkpoint,
    rng_state,
    set_rng_state,
)

from .policy import ARCHITECTURE, FrameSelector, PolicyConfig

log = logging.getLogger(__name__)
WEIGHTS = "policy.safetensors"
__all__ = ["STATE", "WEIGHTS", "check_embedding_model", "embedding_model_of", "latest_checkpoint",
           "load_policy", "read_state", "restore", "save_checkpoint"]


def embedding_model_of(manifest: dict) -> dict:
    """A cache's embedding model as checkpoints record it: {"name", "pretrained", "embed_dim"}."""
    model = manifest["model"]
    return {"name": str(model["name"]), "pretrained": str(model["pretrained"]),
            "embed_dim": int(manifest["embed_dim"])}


def check_embedding_model(state: dict, cache_dir, model: dict | None = None) -> None:
    """Refuse a checkpoint trained on embeddings of another model than this cache's.

    Args:
        state: the checkpoint's state.json (`read_state`); one written before the embedding
            model was recorded is not checked (the embedding size still is, at selection).
        cache_dir: the cache the checkpoint is about to read.
        model: that cache's `embedding_model_of` (read from cache_dir when None).

    Raises:
        ValueError naming both models and both places.
    """
    trained = state.get("embedding_model")
    if not isinstance(trained, dict):
        return
    if model is None:
        from videocfr.cache_format.manifest import load_manifest  # noqa: PLC0415

        model = embedding_model_of(load_manifest(cache_dir))
    if {k: trained.get(k) for k in model} != model:
        raise ValueError(f"selector checkpoint {state.get('path', '')} was trained on "
                         f"embeddings of {_model_text(trained)}, but cache {cache_dir} holds "
                         f"embeddings of {_model_text(model)}; use a selector trained on a "
                         f"cache of that model, or precompute the cache with the checkpoint's")


def _model_text(model: dict) -> str:
    return f"{model.get('name')!r} ({model.get('pretrained')}, D = {model.get('embed_dim')})"


def save_checkpoint(run_dir: str | Path, step: int, policy: FrameSelector, optimizer,
                    generator: torch.Generator, config: dict, cache_hash: str,
                    keep: int = 0, embedding_model: dict | None = None) -> Path:
    """Write a checkpoint after `step` steps; state.json last. Returns its directory.

    `embedding_model` is the training cache's (`embedding_model_of`), recorded for
    `check_embedding_model`.
    """
    from safetensors.torch import save_model  # noqa: PLC0415

    path = checkpoint_dir(run_dir, step)
    path.mkdir(parents=True, exist_ok=True)
    save_model(policy, str(path / WEIGHTS))
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    torch.save({**rng_state(), "rollout": generator.get_state()}, path / "rng.pt")
    commit_state(path, {"step": step, "architecture": ARCHITECTURE,
                        "policy": policy.config.to_dict(), "cache_config_hash": cache_hash,
                        "embedding_model": embedding_model, "config": config}, keep=keep)
    log.info("checkpoint saved: %s", path)
    return path


def read_state(path: str | Path) -> dict:
    """state.json of a checkpoint directory (or of the latest checkpoint of a run directory)."""
    path = Path(path)
    if not (path / STATE).is_file() and (path / "checkpoints").is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"run directory {path} has no complete checkpoint")
        path = found
    if not (path / STATE).is_file():
        raise FileNotFoundError(f"{path} is not a selector checkpoint ({STATE} missing); give a "
                                f"checkpoints/step-N directory or its run directory")
    try:
        state = json.loads((path / STATE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path / STATE} is not valid JSON: {err}") from err
    if not isinstance(state, dict) or state.get("architecture") != ARCHITECTURE:
        found = state.get("architecture") if isinstance(state, dict) else None
        raise ValueError(f"{path} holds a checkpoint of architecture {found!r}, not a ReFoCUS "
                         f"selector ({ARCHITECTURE!r}); give a checkpoint written by "
                         f"`videocfr train` with a selector config")
    state["path"] = str(path)
    return state


def load_policy(path: str | Path, device: str | torch.device = "cpu"
                ) -> tuple[FrameSelector, dict]:
    """Build the policy of a checkpoint and load its weights (eval mode).

    Returns:
        (policy, state): state is state.json plus "path".
    """
    from safetensors.torch import load_file  # noqa: PLC0415

    state = read_state(path)
    policy = FrameSelector(PolicyConfig(**state["policy"]))
    weights = load_file(str(Path(state["path"]) / WEIGHTS))
    mine = policy.state_dict()
    bad = sorted(set(mine) ^ set(weights)) + sorted(
        k for k in set(mine) & set(weights) if mine[k].shape != weights[k].shape)
    if bad:
        raise ValueError(f"{state['path']}: weights do not fit the policy its state.json "
                         f"describes (mismatched tensors: {bad[:5]}); the checkpoint is of "
                         f"another architecture or damaged")
    policy.load_state_dict(weights)
    return policy.to(device).eval(), state


def restore(path: Path, policy: FrameSelector, optimizer, generator: torch.Generator) -> int:
    """Load weights, optimizer and RNG state for --resume; returns the step."""
    from safetensors.torch import load_model  # noqa: PLC0415

    state = read_state(path)
    load_model(policy, str(path / WEIGHTS))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    rng = torch.load(path / "rng.pt", weights_only=False)
    set_rng_state(rng)
    generator.set_state(rng["rollout"])
    return int(state["step"])
