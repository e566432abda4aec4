"""The frame-selection strategy registry (evaluate/strategies.py)."""

import numpy as np
import pytest
from synthetic_cache import make_question, make_video
from videocfr.evaluate.strategies import (
    STRATEGIES,
    allows_repeats,
    register,
    select,
    uniform_positions,
)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("n", [1, 3, 8])
def test_every_strategy_returns_sorted_distinct_positions(name, n):
    v = make_video("v", k=8)
    q = make_question(v, "q")
    pos = select(name, v, q, n, np.random.default_rng(0))
    assert pos.dtype == np.int64 and pos.shape == (n,)
    assert 0 <= pos.min() and pos.max() < 8
    assert np.all(np.diff(pos) >= 0) if allows_repeats(STRATEGIES[name]) else np.all(
        np.diff(pos) > 0)


def test_uniform_positions_spread_evenly():
    assert uniform_positions(32, 4).tolist() == [4, 12, 20, 28]
    assert uniform_positions(8, 8).tolist() == list(range(8))


def test_random_is_seeded():
    v = make_video("v", k=64)
    q = make_question(v, "q")
    a = select("random", v, q, 8, np.random.default_rng(3))
    b = select("random", v, q, 8, np.random.default_rng(3))
    assert a.tolist() == b.tolist()


def test_bad_budget_and_failed_video_name_the_item():
    from videocfr.cache_format import VideoRecord
    v = make_video("vid7", k=8)
    q = make_question(v, "q")
    with pytest.raises(ValueError, match="n=9.*vid7.*K=8"):
        select("uniform", v, q, 9, np.random.default_rng(0))
    bad = VideoRecord.failed("bad1", "x.mp4", "decode failed")
    with pytest.raises(ValueError, match="bad1.*failed"):
        select("uniform", bad, q, 2, np.random.default_rng(0))
    with pytest.raises(KeyError, match="Available"):
        select("nope", v, q, 2, np.random.default_rng(0))


def test_a_wrong_strategy_is_caught():
    def dup(video, question, n, rng):
        return np.zeros(n, np.int64)

    with pytest.raises(AssertionError, match="sorted distinct"):
        select(dup, make_video("v"), make_question(make_video("v"), "q"), 2,
               np.random.default_rng(0))
    with pytest.raises(ValueError, match="already registered"):
        register("uniform")(dup)


# --- the cache-reading strategies, checked by hand -------------------------------------------

from dataclasses import replace  # noqa: E402

from videocfr.cache_format.fusion import FusionConfig, fuse_record  # noqa: E402
from videocfr.evaluate.strategies import (  # noqa: E402
    aks,
    aks_budget,
    distinct_nearest,
    make_strategy,
)


def _with(video, question, **fields):
    return replace(question, **{k: np.asarray(v, np.float32) for k, v in fields.items()})


def test_prior_topn_takes_the_highest_prior_in_time_order():
    v = make_video("v", k=8)
    q = _with(v, make_question(v, "q"), prior=[0.05, 0.3, 0.05, 0.05, 0.2, 0.05, 0.25, 0.05])
    assert select("prior-topn", v, q, 3, np.random.default_rng(0)).tolist() == [1, 4, 6]


def test_prior_its_is_dense_where_the_prior_is_high():
    v = make_video("v", k=10)
    prior = np.full(10, 0.01)
    prior[7] = 0.91  # one peak: after min-max, only frame 7 has weight
    q = _with(v, make_question(v, "q"), prior=prior / prior.sum())
    pos = select("prior-its", v, q, 3, np.random.default_rng(0))
    # every quantile falls on frame 7; the repeats move to its nearest free neighbours
    assert pos.tolist() == [6, 7, 8]
    flat = _with(v, make_question(v, "q"), prior=np.full(10, 0.1))
    assert select("prior-its", v, flat, 5, np.random.default_rng(0)).tolist() == [1, 3, 5, 7, 9]


def test_distinct_nearest_resolves_repeats():
    assert distinct_nearest(np.array([3, 3, 3, 9, 9]), 10).tolist() == [2, 3, 4, 8, 9]


def test_scene_reps_then_uniform_fill():
    v = make_video("v", k=8, num_scenes=2)  # representatives at the first frame of each scene
    reps = np.flatnonzero(v.scene_rep).tolist()
    assert reps == [0, 4]
    q = make_question(v, "q")
    assert select("scene-reps", v, q, 2, np.random.default_rng(0)).tolist() == [0, 4]
    # n = 4: the two reps, then the uniform grid [1, 3, 5, 7] in order, skipping taken ones
    assert select("scene-reps", v, q, 4, np.random.default_rng(0)).tolist() == [0, 1, 3, 4]


def test_novelty_picks_the_outlier_frame():
    v = make_video("v", k=8)
    emb = np.tile(v.embeddings[:1], (8, 1))
    emb[5] = -emb[5]
    v = replace(v, embeddings=emb)
    assert select("novelty", v, make_question(v, "q"), 1, np.random.default_rng(0)).tolist() == [5]


def test_aks_budget_keeps_a_standout_peak_and_covers_a_flat_timeline():
    v = make_video("v", k=8)
    peak = _with(v, make_question(v, "q"), semantic_raw=[0, 0, 0, 0, 0, 0, 1, 0])
    assert aks_budget(v, peak, 1, np.random.default_rng(0)).tolist() == [6]  # 1 - 1/8 > 0.8
    # no standout: the budget is split across halves, then quarters (coverage)
    ramp = _with(v, make_question(v, "q"), semantic_raw=np.linspace(0, 1, 8))
    assert aks_budget(v, ramp, 4, np.random.default_rng(0)).tolist() == [1, 3, 5, 7]


def test_aks_judges_and_splits_as_the_reference():
    v = make_video("v", k=8)
    peak = _with(v, make_question(v, "q"), semantic_raw=[0, 0, 0, 0, 0, 0, 1, 0])
    # root: top-1 mean 1 minus mean 1/8 = 0.875 > 0.8: kept whole, int(1 / 2**0) = 1 frame
    assert aks(v, peak, 1, np.random.default_rng(0)).tolist() == [6]
    v = make_video("v", k=32)
    raw = np.zeros(32)
    raw[[2, 3]] = 1.0
    raw[16:] = 0.5
    q = _with(v, make_question(v, "q"), semantic_raw=raw)
    # n = 2. root: top-2 mean 1 - mean (2 + 8)/32 = 0.6875 <= 0.8: split at 16.
    # [0, 16): 1 - 2/16 = 0.875 > 0.8: kept at depth 1, int(2 / 2) = 1 frame: frame 2 (the
    # earlier of the tie). [16, 32): flat 0.5, 0 <= 0.8: split down to depth 5, where each
    # segment gets int(2 / 32) = 0 frames. The reference returns [2]; the shortfall of one is
    # filled by the best frame not chosen: frame 3.
    assert aks(v, q, 2, np.random.default_rng(0)).tolist() == [2, 3]
    assert aks(v, q, 2, np.random.default_rng(0), t1=0.9).tolist() == [2, 3]  # all fill now
    # a flat timeline: every depth-5 segment gets 0 frames, all n come from the fill
    flat = _with(v, make_question(v, "q"), semantic_raw=np.full(32, 0.3))
    assert aks(v, flat, 4, np.random.default_rng(0)).tolist() == [0, 1, 2, 3]


def test_bolt_its_as_bolt_computes_it():
    v = make_video("v", k=6)
    q = _with(v, make_question(v, "q"), semantic_raw=[0.2, 0.4, 0.2, 0.6, 0.2, 0.2])
    # minmax: [0, .5, 0, 1, 0, 0]. power 1: cdf = [0, 1/3, 1/3, 1, 1, 1];
    # quantiles linspace(1/4, 3/4, 4) = [.25, .417, .583, .75] -> first cdf >= q: [1, 3, 3, 3]
    assert select("bolt-its:power=1", v, q, 4, np.random.default_rng(0)).tolist() == [1, 3, 3, 3]
    # power 3 (the default): s = [0, .125, 0, 1, 0, 0], cdf = [0, 1/9, 1/9, 1, 1, 1]: every
    # quantile lands on frame 3, kept four times as BOLT keeps it
    assert select("bolt-its", v, q, 4, np.random.default_rng(0)).tolist() == [3, 3, 3, 3]
    # a ramp, power 1: minmax [0, .25, .5, .75, 1], cdf [0, .1, .3, .6, 1];
    # n = 2: quantiles linspace(1/2, 1/2, 2) = [.5, .5] -> [3, 3]
    ramp = _with(make_video("r", k=5), make_question(make_video("r", k=5), "q"),
                 semantic_raw=[0, 1, 2, 3, 4])
    assert select("bolt-its:power=1", make_video("r", k=5), ramp, 2,
                  np.random.default_rng(0)).tolist() == [3, 3]
    assert select("bolt-its:power=1", make_video("r", k=5), ramp, 3,
                  np.random.default_rng(0)).tolist() == [3, 3, 4]  # q = [1/3, 1/2, 2/3]
    flat = _with(v, make_question(v, "q"), semantic_raw=np.full(6, 0.1))
    # all equal: ones, cdf [1/6 .. 1]; q = [.25, .417, .583, .75] -> [1, 2, 3, 4]
    assert select("bolt-its", v, flat, 4, np.random.default_rng(0)).tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown parameter 'alpha'"):
        make_strategy("bolt-its:alpha=2")


def test_prior_shuffled_keeps_the_values_and_loses_the_frames():
    v = make_video("v", k=8)
    prior = np.array([0.01, 0.01, 0.01, 0.9, 0.01, 0.02, 0.02, 0.02])
    q = _with(v, make_question(v, "q"), prior=prior)
    picks = [select("prior-shuffled", v, q, 1, np.random.default_rng(s)).item()
             for s in range(40)]
    # the peak goes where the seeded permutation puts it: spread over the candidates
    assert len(set(picks)) >= 5
    perm = np.random.default_rng(3).permutation(8)
    want = int(np.argmax(prior[perm]))
    assert select("prior-shuffled", v, q, 1, np.random.default_rng(3)).tolist() == [want]


def test_re_fused_prior_specs():
    v = make_video("v", k=8)
    q = make_question(v, "q")
    fn = make_strategy("prior-topn@cfr-novelty")
    want = np.sort(np.argsort(-fuse_record(v, q, FusionConfig("cfr-novelty")), kind="stable")[:3])
    assert select(fn, v, q, 3, np.random.default_rng(0)).tolist() == want.tolist()
    scene_only = select("prior-topn@cfr:w_semantic=0", v, q, 2, np.random.default_rng(0))
    want = np.sort(np.argsort(-fuse_record(v, q, FusionConfig(w_semantic=0)), kind="stable")[:2])
    assert scene_only.tolist() == want.tolist()
    with pytest.raises(ValueError, match="unknown parameter"):
        make_strategy("prior-topn@cfr:w_bogus=1")
    with pytest.raises(ValueError, match="take a fusion"):
        make_strategy("uniform@cfr")
    with pytest.raises(KeyError, match="Available"):
        make_strategy("nope:x=1")


@pytest.mark.parametrize("name", ["prior-topn", "prior-its", "scene-reps", "novelty", "aks",
                                  "aks-budget", "prior-shuffled", "prior-topn@cfr-novelty"])
def test_strategies_at_k_512(name):
    v = make_video("long", k=512, num_frames=512 * 25, num_scenes=40)
    q = make_question(v, "q")
    pos = select(name, v, q, 32, np.random.default_rng(0))
    assert pos.shape == (32,) and len(set(pos.tolist())) == 32 and pos.max() < 512
