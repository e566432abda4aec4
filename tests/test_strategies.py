"""The frame-selection strategy registry (evaluate/strategies.py)."""

import numpy as np
import pytest

from evaluate.strategies import STRATEGIES, register, select, uniform_positions
from tests.synthetic_cache import make_question, make_video


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("n", [1, 3, 8])
def test_every_strategy_returns_sorted_distinct_positions(name, n):
    v = make_video("v", k=8)
    q = make_question(v, "q")
    pos = select(name, v, q, n, np.random.default_rng(0))
    assert pos.dtype == np.int64 and pos.shape == (n,)
    assert np.all(np.diff(pos) > 0) and 0 <= pos.min() and pos.max() < 8


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
    from cache_format import VideoRecord
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
