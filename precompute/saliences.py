"""Per-source frame saliences (METHOD §2) and their fusion into the consensus prior (§3).

Pure numpy over embeddings the CLIP pass already made, so the rules are testable by hand:

- uniform: u_k = 1.
- scene: c_j = mean embedding of scene j's sampled frames; the frame closest to c_j (highest
  cosine, ties to the earlier frame) represents the scene with s = 1; the others get
  s_k = exp(-(1 - cos(f_k, c_j)) / τ_s), τ_s = 0.1. A scene with no sampled frame hands its
  representative role to the sampled frame NEAREST IN TIME: the one whose frame number is closest
  to the scene's interval [start, end) (distance to the interval's nearer edge; ties to the
  earlier frame). That frame gets s = 1 and scene_rep = True; frame_scene still names the scene
  the frame lies in.
- semantic: queries Q = {question} ∪ {question + " " + option}; views of frame k = its global
  embedding and its projected patch tokens; raw_k = max over views and queries of cos(v, t_q)
  (`aggregation="mean"`: the mean over views, still the max over queries); r = min-max of raw over
  the K frames, all equal → all 1.

Fusion (every preset, the novelty source and min-max) is cache_format.fusion, never
reimplemented here. `semantic_raw_device` is the same raw score in torch, for embeddings that
stay on the GPU (all questions of a video at once); it equals `semantic_raw` within float32
rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from videocfr.cache_format.fusion import (
    QFRAME_ARRAYS,
    FusionConfig,
    derive_sources,
    fuse_saliences,
    minmax,
)

AGGREGATIONS = ("max", "mean")


@dataclass
class SalienceConfig:
    """How the scene and semantic saliences are computed.

    Args:
        scene_temperature: τ_s of s_k = exp(-(1 - cos) / τ_s) (METHOD: 0.1).
        aggregation: "max" over views (METHOD) or "mean" (ablation: dilutes small patches).
        patch_tokens: include the projected patch tokens among the views (METHOD: true).
        option_queries: add one query per option, question + " " + option (METHOD: true).
    """

    scene_temperature: float = 0.1
    aggregation: str = "max"
    patch_tokens: bool = True
    option_queries: bool = True

    def __post_init__(self):
        if not self.scene_temperature > 0:
            raise ValueError(f"saliences.scene_temperature must be > 0, got "
                             f"{self.scene_temperature}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"saliences.aggregation {self.aggregation!r} unknown; use one of "
                             f"{AGGREGATIONS}")


@dataclass
class SceneSaliences:
    """Scene salience of one video (shared by all its questions).

    Args:
        scene: float32 [K] in [0, 1].
        scene_rep: bool [K], the representatives.
        frame_scene: int32 [K], the scene (row of scenes) each sampled frame lies in.
    """

    scene: np.ndarray
    scene_rep: np.ndarray
    frame_scene: np.ndarray


@dataclass
class QuestionSaliences:
    """All saliences of one question and its fused prior, float32 [K] each: one field per
    stored source of cache_format.fusion.SOURCES, the raw semantic scores and the prior."""

    uniform: np.ndarray
    scene: np.ndarray
    semantic: np.ndarray
    semantic_raw: np.ndarray
    prior: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """{name: float32 [K]} of every per-frame array a cache stores (fusion.QFRAME_ARRAYS)."""
        return {name: getattr(self, name) for name in QFRAME_ARRAYS}


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def uniform_salience(k: int) -> np.ndarray:
    """float32 [K] of ones."""
    return np.ones(k, dtype=np.float32)


def assign_frames_to_scenes(frame_indices: np.ndarray, scenes: np.ndarray) -> np.ndarray:
    """The scene each sampled frame lies in.

    Args:
        frame_indices: int64 [K] file frame numbers.
        scenes: int64 [S, 2] contiguous [start, end) rows, ascending.

    Returns:
        int32 [K] row of `scenes` (a frame past the last scene goes to the last, one before the
        first to the first).
    """
    starts = np.asarray(scenes, dtype=np.int64)[:, 0]
    rows = np.searchsorted(starts, np.asarray(frame_indices, dtype=np.int64), side="right") - 1
    return np.clip(rows, 0, len(starts) - 1).astype(np.int32)


def scene_salience(embeddings: np.ndarray, frame_indices: np.ndarray, scenes: np.ndarray,
                   temperature: float = 0.1) -> SceneSaliences:
    """Scene salience s, representatives and frame-to-scene map (METHOD §2).

    Args:
        embeddings: float [K, D] frame embeddings (normalised here again).
        frame_indices: int64 [K] file frame numbers of the sampled frames, ascending.
        scenes: int64 [S, 2] scenes [start, end); an empty array means one scene.
        temperature: τ_s.

    Returns:
        SceneSaliences with scene float32 [K], scene_rep bool [K], frame_scene int32 [K].
    """
    f = _normalize(embeddings)
    idx = np.asarray(frame_indices, dtype=np.int64)
    k = f.shape[0]
    scenes = np.asarray(scenes, dtype=np.int64).reshape(-1, 2)
    if len(scenes) == 0:
        scenes = np.array([[0, int(idx.max()) + 1 if k else 1]], dtype=np.int64)
    frame_scene = assign_frames_to_scenes(idx, scenes)
    s = np.zeros(k, dtype=np.float64)
    rep = np.zeros(k, dtype=bool)
    for j in range(len(scenes)):
        members = np.flatnonzero(frame_scene == j)
        if members.size == 0:
            # nearest in time: distance from the frame number to the interval [start, end)
            start, end = scenes[j]
            dist = np.maximum(start - idx, 0) + np.maximum(idx - (end - 1), 0)
            rep[int(np.argmin(dist))] = True  # argmin: ties to the earlier frame
            continue
        centre = f[members].mean(axis=0)
        cos = f[members] @ centre / max(float(np.linalg.norm(centre)), 1e-12)
        s[members] = np.exp(-(1.0 - cos) / temperature)
        rep[members[int(np.argmax(cos))]] = True  # argmax: ties to the earlier frame
    s[rep] = 1.0
    return SceneSaliences(scene=np.clip(s, 0.0, 1.0).astype(np.float32), scene_rep=rep,
                          frame_scene=frame_scene)


def semantic_queries(question: str, options: list[str] | None, option_queries: bool = True
                     ) -> list[str]:
    """Q = [question] + [question + " " + option for each option] (duplicates dropped)."""
    queries = [question]
    if option_queries:
        for option in options or []:
            text = f"{question} {option}"
            if text not in queries:
                queries.append(text)
    return queries


def semantic_raw(global_emb: np.ndarray, patch_emb: np.ndarray | None, text_emb: np.ndarray,
                 aggregation: str = "max") -> np.ndarray:
    """raw_k = max over queries of the max (or mean) over views of cos(view, query).

    Args:
        global_emb: float [K, D] frame embeddings.
        patch_emb: float [K, T, D] projected patch tokens, or None (global view only).
        text_emb: float [Q, D] query embeddings.
        aggregation: "max" (METHOD) or "mean" over the 1 + T views.

    Returns:
        float64 [K].
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} unknown; use one of {AGGREGATIONS}")
    views = _normalize(global_emb)[:, None, :]  # (K, 1, D)
    if patch_emb is not None and patch_emb.shape[1] > 0:
        views = np.concatenate([views, _normalize(patch_emb)], axis=1)  # (K, 1 + T, D)
    t = _normalize(text_emb)  # (Q, D)
    cos = views @ t.T  # (K, V, Q)
    pooled = cos.max(axis=1) if aggregation == "max" else cos.mean(axis=1)  # (K, Q)
    return pooled.max(axis=1)


def semantic_raw_device(global_emb, patch_emb, text_emb, query_counts: list[int],
                        aggregation: str = "max"):
    """`semantic_raw` of several questions of one video, in torch on the tensors' device.

    Args:
        global_emb: torch float [K, D] frame embeddings.
        patch_emb: torch float [K, T, D] projected patch tokens, or None (global view only).
        text_emb: torch float [sum Q, D] the queries of every question, question by question.
        query_counts: Q of each question (sums to text_emb's rows).
        aggregation: "max" (METHOD) or "mean" over the 1 + T views.

    Returns:
        torch float32 [len(query_counts), K] on the same device (computed in float32).
    """
    import torch
    import torch.nn.functional as F

    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} unknown; use one of {AGGREGATIONS}")
    if sum(query_counts) != text_emb.shape[0] or min(query_counts, default=1) < 1:
        raise ValueError(f"query_counts {query_counts} do not split {text_emb.shape[0]} "
                         f"queries into questions of >= 1 query")
    views = F.normalize(global_emb.float(), dim=-1)[:, None, :]  # (K, 1, D)
    if patch_emb is not None and patch_emb.shape[1] > 0:
        views = torch.cat([views, F.normalize(patch_emb.float(), dim=-1)], dim=1)  # (K, V, D)
    t = F.normalize(text_emb.float(), dim=-1)  # (sum Q, D)
    cos = torch.matmul(views, t.T)  # (K, V, sum Q)
    pooled = cos.amax(dim=1) if aggregation == "max" else cos.mean(dim=1)  # (K, sum Q)
    if not query_counts:
        return pooled.new_zeros((0, views.shape[0]))
    # max over each question's queries: pad the ragged groups with -inf, one reduction
    index = torch.repeat_interleave(torch.arange(len(query_counts), device=pooled.device),
                                    torch.tensor(query_counts, device=pooled.device))
    out = pooled.new_full((len(query_counts), pooled.shape[0]), float("-inf"))
    out.scatter_reduce_(0, index[:, None].expand(-1, pooled.shape[0]), pooled.T, "amax")
    return out


def question_saliences(scene: SceneSaliences, global_emb: np.ndarray,
                       patch_emb: np.ndarray | None, text_emb: np.ndarray,
                       config: SalienceConfig, fusion: FusionConfig,
                       raw: np.ndarray | None = None) -> QuestionSaliences:
    """All saliences of one question and the fused consensus prior.

    Args:
        scene: the video's scene saliences.
        global_emb: float [K, D] frame embeddings.
        patch_emb: float [K, T, D] projected patch tokens (ignored unless config.patch_tokens).
        text_emb: float [Q, D] embeddings of `semantic_queries(...)`.
        config: salience settings.
        fusion: fusion preset (cache_format.fusion).
        raw: float [K] raw semantic scores already computed (`semantic_raw_device`); then
            `patch_emb` is not used.

    Returns:
        QuestionSaliences, float32 [K] each; prior >= 0 and sums to 1.
    """
    k = global_emb.shape[0]
    if raw is None:
        raw = semantic_raw(global_emb, patch_emb if config.patch_tokens else None, text_emb,
                           config.aggregation)
    else:
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape != (k,):
            raise ValueError(f"raw semantic scores have shape {raw.shape}, expected ({k},)")
    inputs = {"uniform": uniform_salience(k), "scene": scene.scene, "semantic": minmax(raw),
              "semantic_raw": raw.astype(np.float32)}
    # derived sources from the embeddings as the cache stores them (float16): a re-fuse matches
    derived = derive_sources(global_emb.astype(np.float16), fusion)
    prior = fuse_saliences(inputs, scene.scene_rep, fusion, derived)
    return QuestionSaliences(**inputs, prior=prior)
