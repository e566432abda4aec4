"""The registry of model families (one adapter per video-LLM architecture; see base.py).

    >>> family = family_of(model)              # from model.config.model_type
    >>> family = family_for_checkpoint(path)   # from <path>/config.json
    >>> family = family_named("qwen3_vl")      # tiny test models, configs
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import ModelFamily, Span
from .qwen2_5_vl import FAMILY as QWEN2_5_VL
from .qwen3_5 import FAMILY as QWEN3_5
from .qwen3_vl import FAMILY as QWEN3_VL

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (QWEN2_5_VL, QWEN3_VL, QWEN3_5)}
_BY_ARCH = {f.architecture: f for f in FAMILIES.values()}

__all__ = ["FAMILIES", "ModelFamily", "Span", "family_for_checkpoint", "family_named",
           "family_of"]


def _refuse(what: str) -> ValueError:
    return ValueError(f"{what} is not a registered model family; registered: "
                      f"{', '.join(sorted(FAMILIES))} (model_type / architecture "
                      f"{', '.join(sorted(_BY_ARCH))})")


def family_named(name: str) -> ModelFamily:
    """The family registered as `name` (a model_type)."""
    if name not in FAMILIES:
        raise _refuse(f"model family {name!r}")
    return FAMILIES[name]


def family_of(model_or_config) -> ModelFamily:
    """The family of a model (a DeepSpeed engine is unwrapped) or of its config."""
    obj = getattr(model_or_config, "module", model_or_config)
    config = getattr(obj, "config", obj)
    kind = getattr(config, "model_type", None)
    if kind in FAMILIES:
        return FAMILIES[kind]
    arch = type(obj).__name__
    if arch in _BY_ARCH:
        return _BY_ARCH[arch]
    raise _refuse(f"a {arch} with model_type {kind!r}")


def family_for_checkpoint(path: str | Path) -> ModelFamily:
    """The family of a local checkpoint, from its config.json (model_type, then architectures).

    Raises:
        ValueError: no config.json, invalid JSON, or an unregistered family (naming the
            registered ones).
    """
    cfg = Path(path) / "config.json"
    if cfg.is_file():
        try:
            doc = json.loads(cfg.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{cfg} is not valid JSON: {err}") from err
    elif not Path(path).exists() and str(path).count("/") == 1:  # a hub id (local HF cache)
        doc = _hub_config(str(path))
    else:
        raise ValueError(f"{path} is not a model checkpoint directory (no config.json); give the "
                         f"local path of a checkpoint of one of {sorted(FAMILIES)}")
    kind = str(doc.get("model_type", ""))
    if kind in FAMILIES:
        return FAMILIES[kind]
    for arch in doc.get("architectures") or []:
        if arch in _BY_ARCH:
            return _BY_ARCH[arch]
    raise _refuse(f"{path} (model_type {kind!r}, architectures {doc.get('architectures')})")


def _hub_config(repo_id: str) -> dict:
    from transformers import AutoConfig  # noqa: PLC0415

    try:
        config = AutoConfig.from_pretrained(repo_id)
    except (OSError, ValueError) as err:
        raise ValueError(f"{repo_id}: no local directory and its hub config cannot be read "
                         f"({err}); give the local path of a checkpoint of one of "
                         f"{sorted(FAMILIES)}") from err
    return {"model_type": config.model_type, "architectures": config.architectures}
