"""Frame-selection strategies: which n of a cached video's K candidate frames to show a model.

A strategy is a plain function `(video, question, n, rng) -> int64 [n]` returning sorted,
distinct candidate positions in [0, K) (positions into `video.frame_indices`, not file frame
numbers). It is registered under a name with `@register("name")`; adding one is one function and
that one line. `select(name, ...)` checks what every strategy must return.

Strategies that read the consensus prior take it from `question.prior`, or re-fuse the stored
saliences (`cache_format.fusion.fuse_record`) when given another `FusionConfig` through
`functools.partial` / `make_strategy` — no decode and no CLIP.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cache_format import QuestionRecord, VideoRecord

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
    fn = get_strategy(name) if isinstance(name, str) else name
    pos = np.asarray(fn(video, question, n, rng), dtype=np.int64)
    label = name if isinstance(name, str) else getattr(fn, "__name__", "strategy")
    if pos.shape != (n,):
        raise AssertionError(f"strategy {label!r} returned shape {pos.shape}, expected ({n},)")
    if np.any(np.diff(pos) <= 0) or pos.min() < 0 or pos.max() >= k:
        raise AssertionError(f"strategy {label!r} returned {pos.tolist()}: not sorted distinct "
                             f"positions in [0, {k})")
    return pos


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
