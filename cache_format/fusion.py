"""Fusion of per-source frame saliences into the consensus prior (METHOD §3).

Pure numpy on purpose: precompute fuses with it, and `videocfr cache refuse` re-fuses stored
saliences with it, without torch or CLIP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRESETS = ("cfr", "videocfr-ref")


@dataclass(frozen=True)
class FusionConfig:
    """How the saliences are fused.

    Args:
        preset: "cfr" (weighted mean, sharpened softmax) or "videocfr-ref" (indicator sets).
        w_uniform, w_scene, w_semantic: source weights (reference: 0.1, 1, 3).
        temperature: τ of the sharpening softmax (preset cfr).
        semantic_top_frac: the semantic set is the top ⌈frac·K⌉ frames (preset videocfr-ref).
    """

    preset: str = "cfr"
    w_uniform: float = 0.1
    w_scene: float = 1.0
    w_semantic: float = 3.0
    temperature: float = 0.1
    semantic_top_frac: float = 0.25

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"fusion preset {self.preset!r} unknown; use one of {PRESETS}")
        weights = (self.w_uniform, self.w_scene, self.w_semantic)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"fusion weights {weights} must be >= 0 with a positive sum")
        if not self.temperature > 0:
            raise ValueError(f"fusion temperature must be > 0, got {self.temperature}")
        if not 0 < self.semantic_top_frac <= 1:
            raise ValueError(f"semantic_top_frac must be in (0, 1], got {self.semantic_top_frac}")


def semantic_top_set(semantic_raw: np.ndarray, frac: float = 0.25) -> np.ndarray:
    """bool [K]: the top ⌈frac·K⌉ frames by raw semantic score (ties: the earlier frame)."""
    k = semantic_raw.shape[0]
    n = math.ceil(frac * k)
    order = np.argsort(-semantic_raw.astype(np.float64), kind="stable")
    mask = np.zeros(k, dtype=bool)
    mask[order[:n]] = True
    return mask


def fuse(uniform: np.ndarray, scene: np.ndarray, semantic: np.ndarray, semantic_raw: np.ndarray,
         scene_rep: np.ndarray, config: FusionConfig = FusionConfig()) -> np.ndarray:
    """The consensus prior over K frames.

    Args:
        uniform, scene, semantic: float [K] saliences in [0, 1].
        semantic_raw: float [K] raw semantic scores (videocfr-ref ranks by them).
        scene_rep: bool [K] scene representatives (videocfr-ref's scene set).
        config: the fusion preset and its numbers.

    Returns:
        float32 [K], >= 0, sums to 1.
    """
    k = uniform.shape[0]
    for name, arr in (("scene", scene), ("semantic", semantic), ("semantic_raw", semantic_raw),
                      ("scene_rep", scene_rep)):
        if arr.shape != (k,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({k},) like uniform")
    if config.preset == "cfr":
        w = (config.w_uniform, config.w_scene, config.w_semantic)
        logit = (w[0] * uniform.astype(np.float64) + w[1] * scene.astype(np.float64)
                 + w[2] * semantic.astype(np.float64)) / sum(w)
        z = logit / config.temperature
        z -= z.max()
        p = np.exp(z)
    else:
        top = semantic_top_set(semantic_raw, config.semantic_top_frac)
        p = (config.w_uniform + config.w_scene * scene_rep.astype(np.float64)
             + config.w_semantic * top.astype(np.float64))
    p /= p.sum()
    return p.astype(np.float32)


def frame_sets(semantic_raw: np.ndarray, scene_rep: np.ndarray, frame_indices: np.ndarray,
               frac: float = 0.25) -> dict[str, list[int]]:
    """The indicator sets of preset videocfr-ref as lists of file frame indices."""
    top = semantic_top_set(semantic_raw, frac)
    return {
        "uniform": [int(i) for i in frame_indices],
        "scene": [int(i) for i in frame_indices[scene_rep.astype(bool)]],
        "semantic": [int(i) for i in frame_indices[top]],
    }
