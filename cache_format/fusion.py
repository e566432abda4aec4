"""Fusion of per-source frame saliences into the consensus prior (METHOD §3).

Pure numpy on purpose: precompute fuses with it, and `videocfr cache re-fuse` re-fuses stored
saliences with it, without torch or CLIP.

`SOURCES` is the one table of prior sources. The shard schema (qframes/<name>), the writer,
the reader, `cache verify`, `cache re-fuse` (its checks and `--weights`) and the fusion below all
read it. A new stored source is one `PriorSource` entry here, its weight field `w_<name>` in
`FusionConfig`, its array field in `records.QuestionRecord` (tests/test_fusion_registry.py
fails naming either when missing) and its salience function in precompute/saliences.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

PRESETS = ("cfr", "cfr-novelty", "videocfr-ref")
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


# --- the prior sources ---------------------------------------------------------------------------

# A source's check and its videocfr-ref set see the question's fusion inputs by name (its stored
# saliences and semantic_raw) and the video's bool [K] scene representatives.
Inputs = Mapping[str, np.ndarray]
SEMANTIC_ATOL = 1e-3  # stored semantic vs min-max of stored semantic_raw (float32 round trips)


@dataclass(frozen=True)
class PriorSource:
    """One source of the consensus prior (METHOD §2).

    Args:
        name: the source; a stored one is the float32 [K] array qframes/<name> of a shard and
            the attribute QuestionRecord.<name>; its weight is FusionConfig.w_<name>.
        weights: default weight of each preset (every name of PRESETS).
        letter: its weight's letter in `cache re-fuse --weights` (w<letter>).
        stored: True: a salience in [0, 1] stored per question; False: derived when fusing from
            the video's stored frame embeddings by `derive`.
        derive: float [K, D] embeddings -> float32 [K] (sources not stored); `derive_hint` is
            the call the error of a missing derived source names.
        ref_set: (inputs, scene_rep, semantic_top_frac) -> bool [K], the source's indicator set
            in preset videocfr-ref; None: not in that preset (its weight must be 0 there).
        check: (inputs, scene_rep) -> why the stored salience is inconsistent with the other
            inputs, or None; run by `cache re-fuse` after the shape, finite and [0, 1] checks.
    """

    name: str
    weights: Mapping[str, float]
    letter: str
    stored: bool = True
    derive: Callable[[np.ndarray], np.ndarray] | None = None
    derive_hint: str = ""
    ref_set: Callable[[Inputs, np.ndarray, float], np.ndarray] | None = None
    check: Callable[[Inputs, np.ndarray], str | None] | None = None

    @property
    def weight_field(self) -> str:
        return f"w_{self.name}"


def _check_uniform(q: Inputs, scene_rep: np.ndarray) -> str | None:
    if not np.all(q["uniform"] == 1):
        return ("salience uniform is not 1 everywhere: the saliences are missing or not this "
                "format's")
    return None


def _check_scene(q: Inputs, scene_rep: np.ndarray) -> str | None:
    if not scene_rep.any() or np.any(np.abs(q["scene"][scene_rep] - 1) > 1e-6):
        return "salience scene is not 1 at the scene representatives"
    return None


def _check_semantic(q: Inputs, scene_rep: np.ndarray) -> str | None:
    raw = q["semantic_raw"].astype(np.float64)
    if raw.max() - raw.min() > 1e-5:  # near-equal raw scores: min-max is all ones or ambiguous
        gap = float(np.max(np.abs(minmax(raw) - q["semantic"])))
        if gap > SEMANTIC_ATOL:
            return (f"salience semantic differs from the min-max of semantic_raw by {gap:.3g}: "
                    f"the two are inconsistent")
    return None


SOURCES: tuple[PriorSource, ...] = (
    PriorSource("uniform", {"cfr": 0.1, "cfr-novelty": 0.1, "videocfr-ref": 0.1}, "u",
                ref_set=lambda q, rep, frac: np.ones(rep.shape, bool), check=_check_uniform),
    PriorSource("scene", {"cfr": 1.0, "cfr-novelty": 1.0, "videocfr-ref": 1.0}, "s",
                ref_set=lambda q, rep, frac: rep, check=_check_scene),
    PriorSource("semantic", {"cfr": 3.0, "cfr-novelty": 3.0, "videocfr-ref": 3.0}, "r",
                ref_set=lambda q, rep, frac: semantic_top_set(q["semantic_raw"], frac),
                check=_check_semantic),
    PriorSource("novelty", {"cfr": 0.0, "cfr-novelty": 3.0, "videocfr-ref": 0.0}, "n",
                stored=False, derive=novelty_salience,
                derive_hint="novelty=novelty_salience(embeddings)"),
)
SOURCE = {s.name: s for s in SOURCES}
# Source weights of FusionConfig, in SOURCES order, and each preset's defaults (METHOD §3).
WEIGHT_FIELDS = tuple(s.weight_field for s in SOURCES)
PRESET_WEIGHTS: dict[str, tuple[float, ...]] = {
    p: tuple(float(s.weights[p]) for s in SOURCES) for p in PRESETS}
# The stored prior sources: float32 [K] saliences in [0, 1], one per question, in
# qframes/<name> of a shard (the derived ones, novelty, come from the stored frame embeddings).
SALIENCES = tuple(s.name for s in SOURCES if s.stored)
DERIVED = tuple(s.name for s in SOURCES if not s.stored)
# What re-fusing reads per question: the saliences and the raw semantic scores (videocfr-ref
# ranks frames by them).
FUSION_INPUTS = (*SALIENCES, "semantic_raw")
# Every per-question, per-frame array of a shard (qframes/<name>): the fusion inputs and the prior.
QFRAME_ARRAYS = (*FUSION_INPUTS, "prior")
# `cache re-fuse --weights`: the stored sources' weights, then optionally the derived ones'.
CLI_WEIGHT_FIELDS = tuple(SOURCE[n].weight_field for n in (*SALIENCES, *DERIVED))
CLI_WEIGHTS = (",".join(f"w{SOURCE[n].letter}" for n in SALIENCES)
               + "".join(f"[,w{SOURCE[n].letter}]" for n in DERIVED))


@dataclass(frozen=True)
class FusionConfig:
    """How the saliences are fused.

    Args:
        preset: "cfr" (weighted mean, sharpened softmax), "cfr-novelty" (the same arithmetic with
            the novelty source weighted in) or "videocfr-ref" (indicator sets).
        w_uniform, w_scene, w_semantic, w_novelty: source weights (one w_<name> per entry of
            SOURCES); a weight left None takes its preset's default (PRESET_WEIGHTS: 0.1, 1, 3
            and 0, or 3 for cfr-novelty).
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
        if self.preset == "videocfr-ref":
            for s in SOURCES:
                if s.ref_set is None and getattr(self, s.weight_field):
                    alt = next((p for p in PRESETS if p != self.preset and s.weights[p] > 0),
                               "cfr")
                    raise ValueError(f"preset videocfr-ref has no {s.name} set; set "
                                     f"{s.weight_field}: 0 or use preset {alt}")
        if not self.temperature > 0:
            raise ValueError(f"fusion temperature must be > 0, got {self.temperature}")
        if not 0 < self.semantic_top_frac <= 1:
            raise ValueError(f"semantic_top_frac must be in (0, 1], got {self.semantic_top_frac}")

    @property
    def weights(self) -> tuple[float, ...]:
        """The source weights in SOURCES order: (w_uniform, w_scene, w_semantic, w_novelty)."""
        return tuple(float(getattr(self, name)) for name in WEIGHT_FIELDS)

    def needs(self, name: str) -> bool:
        """True when the prior depends on the derived source `name` (it must be computed)."""
        return self.preset != "videocfr-ref" and getattr(self, SOURCE[name].weight_field) > 0

    @property
    def derived_needed(self) -> tuple[str, ...]:
        """The derived sources (DERIVED) this fusion needs."""
        return tuple(name for name in DERIVED if self.needs(name))

    @property
    def needs_novelty(self) -> bool:
        """True when the prior depends on the novelty source (frame embeddings needed)."""
        return self.needs("novelty")


def derive_sources(embeddings: np.ndarray, config: FusionConfig) -> dict[str, np.ndarray]:
    """{name: float32 [K]} of every derived source `config` needs, from float [K, D] frame
    embeddings (pass them as the cache stores them, float16, so a re-fuse matches)."""
    return {name: SOURCE[name].derive(embeddings) for name in config.derived_needed}


def fuse_saliences(inputs: Inputs, scene_rep: np.ndarray, config: FusionConfig = FusionConfig(),
                   derived: Inputs | None = None) -> np.ndarray:
    """The consensus prior over K frames from the sources of SOURCES.

    Args:
        inputs: float [K] each of FUSION_INPUTS (the stored saliences in [0, 1] and the raw
            semantic scores videocfr-ref ranks by), by name.
        scene_rep: bool [K] scene representatives (videocfr-ref's scene set).
        config: the fusion preset and its numbers.
        derived: float [K] of each derived source `config.derived_needed` names
            (`derive_sources`); ignored otherwise.

    Returns:
        float32 [K], >= 0, sums to 1.
    """
    derived = derived or {}
    missing = [name for name in FUSION_INPUTS if name not in inputs]
    if missing:
        raise ValueError(f"fusion inputs lack {missing}; give every one of {FUSION_INPUTS}")
    first = FUSION_INPUTS[0]
    k = inputs[first].shape[0]
    arrays = [(name, inputs[name]) for name in FUSION_INPUTS[1:]] + [("scene_rep", scene_rep)]
    for name in config.derived_needed:
        if derived.get(name) is None:
            field = SOURCE[name].weight_field
            raise ValueError(f"fusion preset {config.preset!r} with {field}="
                             f"{getattr(config, field)} needs the {name} source: pass "
                             f"{SOURCE[name].derive_hint}")
        arrays.append((name, derived[name]))
    for name, arr in arrays:
        if arr.shape != (k,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({k},) like {first}")
    total = None
    if config.preset != "videocfr-ref":
        for s in SOURCES:
            if not (s.stored or config.needs(s.name)):
                continue
            x = inputs[s.name] if s.stored else derived[s.name]
            term = float(getattr(config, s.weight_field)) * x.astype(np.float64)
            total = term if total is None else total + term
        z = total / sum(config.weights) / config.temperature
        z -= z.max()
        p = np.exp(z)
    else:
        rep = np.asarray(scene_rep)
        for s in SOURCES:
            if s.ref_set is None:
                continue
            term = (float(getattr(config, s.weight_field))
                    * s.ref_set(inputs, rep, config.semantic_top_frac).astype(np.float64))
            total = term if total is None else total + term
        p = total
    p /= p.sum()
    return p.astype(np.float32)


def fuse(uniform: np.ndarray, scene: np.ndarray, semantic: np.ndarray, semantic_raw: np.ndarray,
         scene_rep: np.ndarray, config: FusionConfig = FusionConfig(),
         novelty: np.ndarray | None = None) -> np.ndarray:
    """The consensus prior over K frames of METHOD's sources, given by position
    (`fuse_saliences` with inputs by name).

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
    inputs = {"uniform": uniform, "scene": scene, "semantic": semantic,
              "semantic_raw": semantic_raw}
    return fuse_saliences(inputs, scene_rep, config, {"novelty": novelty})


def fuse_record(video, question, config: FusionConfig) -> np.ndarray:
    """Re-fuse one cached question's stored saliences with another fusion config.

    No decode and no CLIP: the saliences and (for the derived sources) the frame embeddings come
    from the cache records.

    Args:
        video: cache_format.VideoRecord of the question's video (status ok).
        question: cache_format.QuestionRecord.
        config: the fusion to apply.

    Returns:
        float32 [K], >= 0, sums to 1.
    """
    inputs = {name: getattr(question, name) for name in FUSION_INPUTS}
    return fuse_saliences(inputs, video.scene_rep, config,
                          derive_sources(video.embeddings, config))


def frame_sets(semantic_raw: np.ndarray, scene_rep: np.ndarray, frame_indices: np.ndarray,
               frac: float = 0.25) -> dict[str, list[int]]:
    """The indicator sets of preset videocfr-ref as lists of file frame indices."""
    top = semantic_top_set(semantic_raw, frac)
    return {
        "uniform": [int(i) for i in frame_indices],
        "scene": [int(i) for i in frame_indices[scene_rep.astype(bool)]],
        "semantic": [int(i) for i in frame_indices[top]],
    }
