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


def register(name: str, repeats: bool = False) -> Callable[[Strategy], Strategy]:
    """Decorator: register a strategy under `name` (an error if the name is taken).

    repeats: the strategy may return a position more than once (sorted, not distinct), as
        BOLT's inverse transform sampling does: the model is then shown that frame twice.
    """

    def deco(fn: Strategy) -> Strategy:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        fn.repeats = repeats
        STRATEGIES[name] = fn
        return fn

    return deco


def allows_repeats(fn: Strategy) -> bool:
    """Whether a strategy (or a make_strategy partial of one) may repeat a position."""
    return bool(getattr(getattr(fn, "func", fn), "repeats", False))


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
        int64 [n], sorted positions in [0, K), distinct unless the strategy was registered
        with `repeats=True` (then non-decreasing).
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
    bad_order = np.diff(pos) < 0 if allows_repeats(fn) else np.diff(pos) <= 0
    if np.any(bad_order) or pos.min() < 0 or pos.max() >= k:
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
    """Inverse transform sampling of the consensus prior (this project's variant of BOLT's rule;
    `bolt-its` is BOLT's own arithmetic).

    The prior is min-max normalised to [0, 1] and raised to the power α; its normalised
    cumulative sum is the CDF; the n frames are where the CDF crosses the n evenly spaced
    quantiles (i + 0.5) / n; a frame hit twice hands the repeat to its nearest free neighbour.
    All-equal scores give the uniform choice. Differences from BOLT: the fused, τ-sharpened prior
    instead of the raw similarities (so it is sharpened twice), α = 2 instead of 3, quantiles
    (i + 0.5) / n instead of linspace(1/n, 1 - 1/n, n), repeats moved instead of kept.
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


BOLT_POWER = 3.0  # BOLT's Video-MME and MLVU scripts (2.5 for LongVideoBench: bolt-its:power=2.5)


@register("bolt-its", repeats=True)
def bolt_its(video: VideoRecord, question: QuestionRecord, n: int, rng: np.random.Generator,
             power: float = BOLT_POWER) -> np.ndarray:
    """BOLT's inverse transform sampling (Liu et al. 2025), as its select_frames.py computes it.

    s = minmax(raw semantic similarity) ** power; CDF = cumsum(s / sum s); the positions are
    searchsorted(CDF, linspace(1/n, 1 - 1/n, n)) (numpy's default side, "left").

    Duplicates as BOLT handles them: kept. Where the CDF is steep several quantiles land on the
    same frame and BOLT passes that frame's time as many times to the model's video reader
    (which sorts and clips the indices, nothing else), so the model sees the frame repeated and
    fewer distinct frames than n. This strategy returns the repeats the same way (sorted,
    non-decreasing); a hit is a needle frame among them, whatever the count.

    Where this differs from BOLT, and why:
    - the scores are the cache's `semantic_raw` (max over the frame's global and patch
      embeddings and over the question and question + option queries, METHOD §2); BOLT takes the
      cosine of the frame's global CLIP embedding with the question's text alone;
    - all-equal scores: BOLT divides 0 by 0 (NaN, every quantile then lands on frame 0); here
      min-max gives all ones, so the quantiles spread evenly over the timeline;
    - a quantile past the last CDF value (float rounding at 1 - 1/n) is clipped to frame K - 1,
      as BOLT's reader clips indices to the video's last frame.
    """
    k = video.num_sampled
    s = minmax(np.asarray(question.semantic_raw, np.float64)).astype(np.float64) ** power
    cdf = np.cumsum(s / s.sum())
    quantiles = np.linspace(1 / n, 1 - 1 / n, n)
    return np.minimum(np.searchsorted(cdf, quantiles), k - 1).astype(np.int64)


@register("prior-shuffled")
def prior_shuffled(video: VideoRecord, question: QuestionRecord, n: int,
                   rng: np.random.Generator, fusion: FusionConfig | None = None) -> np.ndarray:
    """Control: top n of the consensus prior after a seeded shuffle across the candidates.

    The same values as `prior-topn`, with their link to the frames removed (METHOD §8's
    control): what `prior-topn` gains over this is what the prior knows about the frames.
    """
    prior = _prior(video, question, fusion)
    return top_n(prior[rng.permutation(prior.size)], n)


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


AKS_T1 = 0.8        # AKS's frame_select.py defaults: the relevance threshold t1,
AKS_T2 = -100.0     # the spread threshold t2 (std > -100: always true),
AKS_ALL_DEPTH = 5   # and the deepest split (all_depth)


def _aks_scores(question: QuestionRecord) -> np.ndarray:
    return minmax(np.asarray(question.semantic_raw, np.float64)).astype(np.float64)


@register("aks")
def aks(video: VideoRecord, question: QuestionRecord, n: int, rng: np.random.Generator,
        t1: float = AKS_T1, t2: float = AKS_T2, all_depth: int = AKS_ALL_DEPTH) -> np.ndarray:
    """Adaptive Keyframe Sampling (Tang et al. 2025), as its reference frame_select.py computes it.

    Scores are min-max normalised over the video once. Judge and split, from the whole timeline
    at depth 0: a segment is kept whole when the mean of its top n scores (n: the full budget,
    at every depth) minus the segment's mean exceeds t1 = 0.8 and its std exceeds t2 = -100;
    otherwise, while depth < all_depth = 5, it splits at len // 2 into two halves one level
    deeper; at depth 5 it is kept. Each kept segment at depth d gives its int(n / 2**d) best
    frames (ties: the earlier frame).

    The one difference from the reference, and why: int(n / 2**d) rounds down and a segment can
    be shorter than its share, so the reference returns fewer than n frames — at n = 8, every
    depth-5 segment gets int(8 / 32) = 0 and a timeline with no standout returns none at all.
    A fixed-budget comparison needs n frames, so the shortfall is filled with the
    highest-scoring frames not yet chosen (ties: the earlier frame). The scores are the cache's
    `semantic_raw` (CLIP, max over views and queries) where the reference uses BLIP's
    image-text matching score. `aks-budget` is the project's earlier variant.
    """
    scores = _aks_scores(question)
    chosen: list[int] = []
    todo = [(0, video.num_sampled, 0)]
    while todo:  # the reference recurses level by level; the kept set does not depend on order
        lo, hi, depth = todo.pop()
        if hi <= lo:
            continue  # splitting a single frame leaves an empty half: it holds nothing
        seg = scores[lo:hi]
        best = lo + np.argsort(-seg, kind="stable")
        relevant = seg[best[:n] - lo].mean() - seg.mean() > t1 and seg.std() > t2
        if relevant or depth >= all_depth:
            chosen.extend(int(b) for b in best[:int(n / 2 ** depth)])
        else:
            mid = lo + (hi - lo) // 2
            todo += [(mid, hi, depth + 1), (lo, mid, depth + 1)]
    if len(chosen) < n:  # the reference's shortfall (see above), filled by relevance
        taken = set(chosen)
        chosen += [int(p) for p in np.argsort(-scores, kind="stable") if int(p) not in taken
                   ][:n - len(chosen)]
    return np.sort(np.array(chosen, np.int64))


AKS_THRESHOLD = 0.8  # aks-budget: a segment whose top frames stand out this much from its mean
AKS_MAX_DEPTH = 5    # keeps them; else it is split in two (coverage)


@register("aks-budget")
def aks_budget(video: VideoRecord, question: QuestionRecord, n: int, rng: np.random.Generator,
               threshold: float = AKS_THRESHOLD, max_depth: int = AKS_MAX_DEPTH) -> np.ndarray:
    """The project's earlier AKS variant: a budget carried down the splits (never short of n).

    A segment with budget b keeps its b best frames when they are clearly more relevant than the
    segment on average (mean of the top b minus the segment mean > threshold, on scores min-max
    normalised over the video), or at max_depth; otherwise it splits in two halves in time, each
    with half the budget (the odd frame to the half with the higher mean score). Differences from
    AKS's reference (`aks`): the relevance test takes the top b of the segment's own budget, not
    the top n of the whole budget; a segment's share is its carried budget, not
    int(n / 2**depth), so no frame is lost to rounding and no fill is needed; a budget that
    covers the whole segment takes it whole.
    """
    scores = _aks_scores(question)
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


# --- strategies with parameters: "name[@preset][:key=value,...]" ------------------------------

FUSED = ("prior-topn", "prior-its", "prior-shuffled")  # read the prior: take a fusion preset
OWN_PARAMS = {"prior-its": {"alpha": float}, "bolt-its": {"power": float},
              "aks": {"t1": float, "t2": float, "all_depth": int},
              "aks-budget": {"threshold": float, "max_depth": int}}


def make_strategy(spec: str) -> Strategy:
    """A strategy from a spec: a registered name, with a re-fused prior and/or its own parameters.

    `prior-topn@cfr-novelty` re-fuses the stored saliences with preset cfr-novelty;
    `prior-topn@cfr:w_semantic=0` with preset cfr and the semantic weight at 0 (the scene signal
    alone); `prior-its@cfr:alpha=3` changes the strategy's own parameter, and so does
    `bolt-its:power=2.5` (no prior, no preset). No decode, no CLIP.
    """
    if "@" not in spec and ":" not in spec:
        return get_strategy(spec)
    head, _, params = spec.partition(":")
    base, at, preset = head.partition("@")
    fn = get_strategy(base)
    if at and base not in FUSED:
        raise ValueError(f"strategy spec {spec!r}: only {list(FUSED)} take a fusion "
                         f"(name@preset[:key=value,...])")
    own = OWN_PARAMS.get(base, {})
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
        if at and key in FusionConfig.__dataclass_fields__ and key != "preset":
            fusion_kw[key] = number
        elif key in own:
            own_kw[key] = own[key](number)
        else:
            fields = list(own) + (list(WEIGHT_FIELDS) + ["temperature", "semantic_top_frac"]
                                  if at else [])
            raise ValueError(f"strategy spec {spec!r}: unknown parameter {key!r}; {base} takes "
                             f"{fields or 'none'}")
    if at:
        own_kw["fusion"] = FusionConfig(preset=preset, **fusion_kw)
    return functools.partial(fn, **own_kw)
