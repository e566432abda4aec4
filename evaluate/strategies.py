"""Frame-selection strategies: which n of a cached video's K candidate frames to show a model.

A strategy is a plain function `(video, question, n, rng) -> int64 [n]` returning sorted,
distinct candidate positions in [0, K) (positions into `video.frame_indices`, not file frame
numbers). It is registered under a name with `@register("name")`; adding one is one function and
that one line. `select(name, ...)` checks what every strategy must return.

Strategies that read the consensus prior take it from `question.prior`, or re-fuse the stored
saliences (`cache_format.fusion.fuse_record`) when named with a fusion spec, e.g.
`prior-topn@cfr-novelty` or `prior-topn@cfr:w_semantic=0` (`make_strategy`) — no decode, no CLIP.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable

import numpy as np
from videocfr.cache_format import QuestionRecord, VideoRecord
from videocfr.cache_format.fusion import (
    EQUAL_ATOL,
    WEIGHT_FIELDS,
    FusionConfig,
    fuse_record,
    minmax,
    novelty_salience,
)

Strategy = Callable[[VideoRecord, QuestionRecord, int, np.random.Generator], np.ndarray]
STRATEGIES: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    """Decorator: register a strategy under `name` (an error if the name is taken)."""

    def deco(fn: Strategy) -> Strategy:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        STRATEGIES[name] = fn
        return fn

    return deco


def get_strategy(name: str) -> Strategy:
    """The strategy registered as `name`; the error lists the available ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"strategy {name!r} not found. Available: {sorted(STRATEGIES)}") from None


def select(name: str | Strategy, video: VideoRecord, question: QuestionRecord, n: int,
           rng: np.random.Generator) -> np.ndarray:
    """Run a strategy and check its answer.

    Args:
        name: a registered name, or a strategy function.
        video, question: the cached records (video status ok).
        n: the frame budget, 1 <= n <= K.
        rng: the random generator (seeded by the caller).

    Returns:
        int64 [n], sorted, distinct positions in [0, K).
    """
    if not video.ok:
        raise ValueError(f"video {video.video_id!r} failed in precompute ({video.error}); it has "
                         f"no candidate frames to select from")
    k = video.num_sampled
    if not 1 <= n <= k:
        raise ValueError(f"budget n={n} for video {video.video_id!r} must be in [1, K={k}]; "
                         f"lower n or precompute more candidates (sampling.fps/max_frames)")
    fn = make_strategy(name) if isinstance(name, str) else name
    pos = np.asarray(fn(video, question, n, rng), dtype=np.int64)
    label = name if isinstance(name, str) else getattr(fn, "__name__", "strategy")
    if pos.shape != (n,):
        raise AssertionError(f"strategy {label!r} returned shape {pos.shape}, expected ({n},)")
    if np.any(np.diff(pos) <= 0) or pos.min() < 0 or pos.max() >= k:
        raise AssertionError(f"strategy {label!r} returned {pos.tolist()}: not sorted distinct "
                             f"positions in [0, {k})")
    return pos


def sample_rng(seed: int, n: int, video_id: str, question_id: str) -> np.random.Generator:
    """The generator of one (question, budget): stable across processes and run orders, so
    `videocfr evaluate qa` and `videocfr select` draw the same `random` frames."""
    salt = zlib.crc32(f"{video_id}/{question_id}".encode())
    return np.random.default_rng([seed, n, salt])


def uniform_positions(k: int, n: int) -> np.ndarray:
    """n positions spread evenly over [0, K): the centres of n equal segments."""
    return np.floor((np.arange(n) + 0.5) * k / n).astype(np.int64)


@register("uniform")
def uniform(video: VideoRecord, question: QuestionRecord, n: int,
            rng: np.random.Generator) -> np.ndarray:
    """n candidates evenly spaced in time."""
    return uniform_positions(video.num_sampled, n)


@register("random")
def random(video: VideoRecord, question: QuestionRecord, n: int,
           rng: np.random.Generator) -> np.ndarray:
    """n distinct candidates drawn uniformly by the (seeded) rng."""
    return np.sort(rng.choice(video.num_sampled, size=n, replace=False)).astype(np.int64)


# --- strategies that read the cached priors and saliences --------------------------------------


def _prior(video: VideoRecord, question: QuestionRecord, fusion: FusionConfig | None
           ) -> np.ndarray:
    """The cached consensus prior, or the stored saliences re-fused with `fusion` (no CLIP)."""
    if fusion is None:
        return np.asarray(question.prior, np.float64)
    return fuse_record(video, question, fusion).astype(np.float64)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n highest scores, sorted in time (ties: the earlier frame)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return np.sort(order[:n]).astype(np.int64)


def distinct_nearest(pos: np.ndarray, k: int) -> np.ndarray:
    """Make positions distinct: each repeat moves to the nearest free position (later first)."""
    taken = np.zeros(k, bool)
    out = []
    for p in np.asarray(pos, np.int64):
        for step in range(k):
            for q in (p + step, p - step):
                if 0 <= q < k and not taken[q]:
                    taken[q] = True
                    out.append(q)
                    break
            else:
                continue
            break
    return np.sort(np.array(out, np.int64))


@register("prior-topn")
def prior_topn(video: VideoRecord, question: QuestionRecord, n: int, rng: np.random.Generator,
               fusion: FusionConfig | None = None) -> np.ndarray:
    """The n candidates with the highest consensus prior (METHOD §8)."""
    return top_n(_prior(video, question, fusion), n)


ITS_ALPHA = 2.0  # sharpening power of prior-its (configurable through make_strategy)


@register("prior-its")
def prior_its(video: VideoRecord, question: QuestionRecord, n: int, rng: np.random.Generator,
              fusion: FusionConfig | None = None, alpha: float = ITS_ALPHA) -> np.ndarray:
    """Inverse transform sampling of the prior (BOLT): dense where the prior is high, never
    empty where it is low.

    Scores are min-max normalised to [0, 1] and raised to the power α; their normalised cumulative
    sum is the CDF; the n frames are where the CDF crosses the n evenly spaced quantiles
    (i + 0.5) / n; a frame hit twice hands the repeat to its nearest free neighbour. All-equal
    scores give the uniform choice.
    """
    k = video.num_sampled
    prior = _prior(video, question, fusion)
    if not np.ptp(prior) > EQUAL_ATOL:  # nothing to prefer
        return uniform_positions(k, n)
    s = minmax(prior).astype(np.float64) ** alpha
    cdf = np.cumsum(s) / s.sum()
    quantiles = (np.arange(n) + 0.5) / n
    pos = np.minimum(np.searchsorted(cdf, quantiles, side="left"), k - 1)
    return distinct_nearest(pos, k)


def fill_uniform(chosen: np.ndarray, k: int, n: int) -> np.ndarray:
    """Complete `chosen` to n distinct positions with the uniform grid's points not yet taken."""
    chosen = list(dict.fromkeys(int(p) for p in chosen))[:n]
    for p in uniform_positions(k, n):
        if len(chosen) == n:
            break
        if int(p) not in chosen:
            chosen.append(int(p))
    free = (p for p in range(k) if p not in set(chosen))
    while len(chosen) < n:  # the grid's points were taken: any free frame, earliest first
        chosen.append(next(free))
    return np.sort(np.array(chosen, np.int64))


@register("scene-reps")
def scene_reps(video: VideoRecord, question: QuestionRecord, n: int,
               rng: np.random.Generator) -> np.ndarray:
    """One frame per scene (its representative), filled up uniformly in time.

    More scenes than n: n representatives spread evenly over the list of scenes (coverage).
    """
    reps = np.flatnonzero(video.scene_rep).astype(np.int64)
    if reps.size > n:
        reps = reps[uniform_positions(reps.size, n)]
    return fill_uniform(reps, video.num_sampled, n)


@register("novelty")
def novelty(video: VideoRecord, question: QuestionRecord, n: int,
            rng: np.random.Generator) -> np.ndarray:
    """The n candidates least like the video's mean frame (METHOD §2's novelty source)."""
    return top_n(novelty_salience(video.embeddings), n)


AKS_THRESHOLD = 0.8  # on min-max normalised scores: a segment whose top frames stand out this
AKS_MAX_DEPTH = 5    # much from its mean keeps them; else it is split in two (coverage)


@register("aks")
def aks(video: VideoRecord, question: QuestionRecord, n: int, rng: np.random.Generator,
        threshold: float = AKS_THRESHOLD, max_depth: int = AKS_MAX_DEPTH) -> np.ndarray:
    """Adaptive Keyframe Sampling (Tang et al. 2025) on the cached semantic scores.

    A segment with budget b keeps its b best frames when they are clearly more relevant than the
    segment on average (mean of the top b minus the segment mean > threshold, on scores min-max
    normalised over the video), or at max_depth; otherwise it splits in two halves in time, each
    with half the budget (the odd frame to the half with the higher mean score), so the choice
    also covers the timeline.
    """
    scores = minmax(np.asarray(question.semantic_raw, np.float64)).astype(np.float64)
    out: list[int] = []

    def visit(lo: int, hi: int, budget: int, depth: int) -> None:
        if budget <= 0:
            return
        if budget >= hi - lo:
            out.extend(range(lo, hi))
            return
        seg = scores[lo:hi]
        best = lo + np.argsort(-seg, kind="stable")[:budget]
        if depth >= max_depth or scores[best].mean() - seg.mean() > threshold:
            out.extend(int(b) for b in best)
            return
        mid = (lo + hi) // 2
        left = budget // 2
        if budget % 2 and scores[lo:mid].mean() >= scores[mid:hi].mean():
            left += 1
        left = min(left, mid - lo)
        right = min(budget - left, hi - mid)
        left = budget - right
        visit(lo, mid, left, depth + 1)
        visit(mid, hi, right, depth + 1)

    visit(0, video.num_sampled, n, 0)
    return np.sort(np.array(out, np.int64))


# --- strategies with parameters: "name@preset[:key=value,...]" ----------------------------------

PARAMETRISED = {"prior-topn": prior_topn, "prior-its": prior_its}


def make_strategy(spec: str) -> Strategy:
    """A strategy from a spec: a registered name, or a prior strategy on a re-fused prior.

    `prior-topn@cfr-novelty` re-fuses the stored saliences with preset cfr-novelty;
    `prior-topn@cfr:w_semantic=0` with preset cfr and the semantic weight at 0 (the scene signal
    alone); `prior-its@cfr:alpha=3` changes the strategy's own parameter. No decode, no CLIP.
    """
    if "@" not in spec:
        return get_strategy(spec)
    base, _, rest = spec.partition("@")
    if base not in PARAMETRISED:
        raise ValueError(f"strategy spec {spec!r}: only {sorted(PARAMETRISED)} take a fusion "
                         f"(name@preset[:key=value,...])")
    preset, _, params = rest.partition(":")
    fusion_kw: dict[str, float] = {}
    own_kw: dict[str, float] = {}
    for item in filter(None, params.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"strategy spec {spec!r}: {item!r} is not key=value")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"strategy spec {spec!r}: {key} must be a number") from None
        if key in FusionConfig.__dataclass_fields__ and key != "preset":
            fusion_kw[key] = number
        elif key == "alpha" and base == "prior-its":
            own_kw[key] = number
        else:
            raise ValueError(f"strategy spec {spec!r}: unknown parameter {key!r}; use fusion "
                             f"fields {WEIGHT_FIELDS + ('temperature', 'semantic_top_frac')}"
                             + (" or alpha" if base == "prior-its" else ""))
    fusion = FusionConfig(preset=preset, **fusion_kw)
    return functools.partial(PARAMETRISED[base], fusion=fusion, **own_kw)
