"""Fusion of per-source frame saliences into the consensus prior (METHOD §3).

Pure numpy on purpose: precompute fuses with it, and `videocfr cache re-fuse` re-fuses stored
saliences with it, without torch or CLIP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRESETS = ("cfr", "cfr-novelty", "videocfr-ref")
# Default source weights (w_uniform, w_scene, w_semantic, w_novelty) of each preset (METHOD §3).
PRESET_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "cfr": (0.1, 1.0, 3.0, 0.0),
    "cfr-novelty": (0.1, 1.0, 3.0, 3.0),
    "videocfr-ref": (0.1, 1.0, 3.0, 0.0),
}
WEIGHT_FIELDS = ("w_uniform", "w_scene", "w_semantic", "w_novelty")
# The stored prior sources: float32 [K] saliences in [0, 1], one per question, in
# qframes/<name> of a shard (novelty is derived from the stored frame embeddings, never stored).
SALIENCES = ("uniform", "scene", "semantic")
# What re-fusing reads per question: the saliences and the raw semantic scores (videocfr-ref
# ranks frames by them).
FUSION_INPUTS = (*SALIENCES, "semantic_raw")
# Every per-question, per-frame array of a shard (qframes/<name>): the fusion inputs and the prior.
QFRAME_ARRAYS = (*FUSION_INPUTS, "prior")


@dataclass(frozen=True)
class FusionConfig:
    """How the saliences are fused.

    Args:
        preset: "cfr" (weighted mean, sharpened softmax), "cfr-novelty" (the same arithmetic with
            the novelty source weighted in) or "videocfr-ref" (indicator sets).
        w_uniform, w_scene, w_semantic, w_novelty: source weights; a weight left None takes its
            preset's default (PRESET_WEIGHTS: 0.1, 1, 3 and 0, or 3 for cfr-novelty).
        temperature: τ of the sharpening softmax (presets cfr, cfr-novelty).
        semantic_top_frac: the semantic set is the top ⌈frac·K⌉ frames (preset videocfr-ref).
    """

    preset: str = "cfr"
    w_uniform: float | None = None
    w_scene: float | None = None
    w_semantic: float | None = None
    w_novelty: float | None = None
    temperature: float = 0.1
    semantic_top_frac: float = 0.25

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"fusion preset {self.preset!r} unknown; use one of {PRESETS}")
        for name, default in zip(WEIGHT_FIELDS, PRESET_WEIGHTS[self.preset]):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)  # frozen: fill the preset's default
        weights = self.weights
        if not all(math.isfinite(w) for w in weights) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"fusion weights {weights} must be finite, >= 0, with a positive sum")
        if self.preset == "videocfr-ref" and self.w_novelty:
            raise ValueError("preset videocfr-ref has no novelty set; set w_novelty: 0 or use "
                             "preset cfr-novelty")
        if not self.temperature > 0:
            raise ValueError(f"fusion temperature must be > 0, got {self.temperature}")
        if not 0 < self.semantic_top_frac <= 1:
            raise ValueError(f"semantic_top_frac must be in (0, 1], got {self.semantic_top_frac}")

    @property
    def weights(self) -> tuple[float, float, float, float]:
        """(w_uniform, w_scene, w_semantic, w_novelty)."""
        return tuple(float(getattr(self, name)) for name in WEIGHT_FIELDS)

    @property
    def needs_novelty(self) -> bool:
        """True when the prior depends on the novelty source (frame embeddings needed)."""
        return self.preset != "videocfr-ref" and self.w_novelty > 0


EQUAL_ATOL = 1e-6  # scores closer than this count as equal (float32 cosines carry ~1e-7 noise)


def minmax(raw: np.ndarray, atol: float = EQUAL_ATOL) -> np.ndarray:
    """Min-max normalisation to [0, 1] over the K frames; all equal (within atol) → all 1.

    Args:
        raw: float [K] raw scores.
        atol: a spread (max - min) at or below this counts as all equal.

    Returns:
        float32 [K].
    """
    raw = np.asarray(raw, dtype=np.float64)
    lo, hi = float(raw.min()), float(raw.max())
    if not hi - lo > atol:
        return np.ones(raw.shape, dtype=np.float32)
    return np.clip((raw - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def novelty_salience(embeddings: np.ndarray) -> np.ndarray:
    """The query-agnostic novelty source n (METHOD §2).

    f̄ = the normalised mean of the K frame embeddings; n_k = min-max of 1 - cos(f_k, f̄). Frames
    unlike the rest of the video (visual outliers) score high. Computed from the stored float16
    embeddings, so a re-fuse gives the same novelty as precompute did.

    Args:
        embeddings: float [K, D] frame embeddings (L2-normalised or not).

    Returns:
        float32 [K] in [0, 1]; all 1 when every frame is alike.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"novelty needs embeddings of shape [K, D] with K >= 1, got {emb.shape}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.maximum(norms, 1e-12)
    mean = unit.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)
    return minmax(1.0 - unit @ mean)


def semantic_top_set(semantic_raw: np.ndarray, frac: float = 0.25) -> np.ndarray:
    """bool [K]: the top ⌈frac·K⌉ frames by raw semantic score (ties: the earlier frame)."""
    k = semantic_raw.shape[0]
    n = math.ceil(frac * k)
    order = np.argsort(-semantic_raw.astype(np.float64), kind="stable")
    mask = np.zeros(k, dtype=bool)
    mask[order[:n]] = True
    return mask


def fuse(uniform: np.ndarray, scene: np.ndarray, semantic: np.ndarray, semantic_raw: np.ndarray,
         scene_rep: np.ndarray, config: FusionConfig = FusionConfig(),
         novelty: np.ndarray | None = None) -> np.ndarray:
    """The consensus prior over K frames.

    Args:
        uniform, scene, semantic: float [K] saliences in [0, 1].
        semantic_raw: float [K] raw semantic scores (videocfr-ref ranks by them).
        scene_rep: bool [K] scene representatives (videocfr-ref's scene set).
        config: the fusion preset and its numbers.
        novelty: float [K] novelty source (`novelty_salience`); required when
            `config.needs_novelty`, ignored otherwise.

    Returns:
        float32 [K], >= 0, sums to 1.
    """
    k = uniform.shape[0]
    arrays = [("scene", scene), ("semantic", semantic), ("semantic_raw", semantic_raw),
              ("scene_rep", scene_rep)]
    if config.needs_novelty:
        if novelty is None:
            raise ValueError(f"fusion preset {config.preset!r} with w_novelty={config.w_novelty} "
                             f"needs the novelty source: pass novelty=novelty_salience(embeddings)")
        arrays.append(("novelty", novelty))
    for name, arr in arrays:
        if arr.shape != (k,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({k},) like uniform")
    if config.preset != "videocfr-ref":
        w = config.weights
        logit = (w[0] * uniform.astype(np.float64) + w[1] * scene.astype(np.float64)
                 + w[2] * semantic.astype(np.float64))
        if config.needs_novelty:
            logit = logit + w[3] * novelty.astype(np.float64)
        logit = logit / sum(w)
        z = logit / config.temperature
        z -= z.max()
        p = np.exp(z)
    else:
        top = semantic_top_set(semantic_raw, config.semantic_top_frac)
        p = (config.w_uniform + config.w_scene * scene_rep.astype(np.float64)
             + config.w_semantic * top.astype(np.float64))
    p /= p.sum()
    return p.astype(np.float32)


def fuse_record(video, question, config: FusionConfig) -> np.ndarray:
    """Re-fuse one cached question's stored saliences with another fusion config.

    No decode and no CLIP: the saliences and (for the novelty source) the frame embeddings come
    from the cache records.

    Args:
        video: cache_format.VideoRecord of the question's video (status ok).
        question: cache_format.QuestionRecord.
        config: the fusion to apply.

    Returns:
        float32 [K], >= 0, sums to 1.
    """
    novelty = novelty_salience(video.embeddings) if config.needs_novelty else None
    return fuse(question.uniform, question.scene, question.semantic, question.semantic_raw,
                video.scene_rep, config, novelty=novelty)


def frame_sets(semantic_raw: np.ndarray, scene_rep: np.ndarray, frame_indices: np.ndarray,
               frac: float = 0.25) -> dict[str, list[int]]:
    """The indicator sets of preset videocfr-ref as lists of file frame indices."""
    top = semantic_top_set(semantic_raw, frac)
    return {
        "uniform": [int(i) for i in frame_indices],
        "scene": [int(i) for i in frame_indices[scene_rep.astype(bool)]],
        "semantic": [int(i) for i in frame_indices[top]],
    }
