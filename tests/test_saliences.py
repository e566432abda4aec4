"""Saliences (METHOD §2) and their fusion (§3) on small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from videocfr.cache_format.fusion import FusionConfig
from videocfr.precompute.saliences import (
    SalienceConfig,
    assign_frames_to_scenes,
    minmax,
    question_saliences,
    scene_salience,
    semantic_queries,
    semantic_raw,
    uniform_salience,
)


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float64)
    return a / np.linalg.norm(a)


def test_uniform_is_ones():
    u = uniform_salience(6)
    assert u.dtype == np.float32 and u.shape == (6,) and np.all(u == 1)


def test_assign_frames_to_scenes():
    scenes = np.array([[0, 10], [10, 25], [25, 40]])
    got = assign_frames_to_scenes(np.array([0, 9, 10, 24, 25, 39]), scenes)
    assert got.tolist() == [0, 0, 1, 1, 2, 2]
    assert got.dtype == np.int32


def test_scene_salience_hand_computed():
    # scene 0: frames e1, e1, (e1+e2)/√2 ; scene 1: one frame e2
    f = np.stack([unit(1, 0), unit(1, 0), unit(1, 1), unit(0, 1)])
    idx = np.array([2, 5, 8, 12])
    scenes = np.array([[0, 10], [10, 20]])
    out = scene_salience(f, idx, scenes, temperature=0.1)
    c = (2 * unit(1, 0) + unit(1, 1)) / 3
    cos = f[:3] @ c / np.linalg.norm(c)
    expected = np.exp(-(1 - cos) / 0.1)
    expected[0] = 1.0  # frames 0 and 1 tie as closest to c: the earlier one represents
    assert out.scene_rep.tolist() == [True, False, False, True]
    np.testing.assert_allclose(out.scene[:3], expected, rtol=1e-6)
    assert out.scene[3] == 1.0  # a scene of one frame: it is its representative
    assert out.frame_scene.tolist() == [0, 0, 0, 1]
    assert out.scene.dtype == np.float32 and out.scene.min() >= 0 and out.scene.max() <= 1


# Frames: 2 and 8 identical (the earlier represents their scene); 16 off-centre, 22 and 26
# identical (22 represents the scene of 16, 22, 26 when they share one).
NEAREST_F = np.stack([unit(1, 0), unit(1, 0), unit(1, 1), unit(0, 1), unit(0, 1)])
NEAREST_IDX = np.array([2, 8, 16, 22, 26])


@pytest.mark.parametrize("scenes, expected_rep", [
    # empty scene [10, 12): frame 8 is 2 frames before it, frame 16 is 5 after its last frame
    pytest.param([[0, 10], [10, 12], [12, 30]], [True, True, False, True, False],
                 id="empty scene [10,12) -> frame 8"),
    # empty scene [13, 15): frame 8 is 5 before, frame 16 is 2 after
    pytest.param([[0, 13], [13, 15], [15, 30]], [True, False, True, True, False],
                 id="empty scene [13,15) -> frame 16"),
    # empty scene [10, 14): frame 8 is 2 before it, frame 16 is 3 after its last frame 13
    pytest.param([[0, 10], [10, 14], [14, 30]], [True, True, False, True, False],
                 id="empty scene [10,14) -> frame 8"),
])
def test_scene_without_sampled_frame_gives_role_to_nearest_in_time(scenes, expected_rep):
    scenes = np.array(scenes)
    out = scene_salience(NEAREST_F, NEAREST_IDX, scenes, temperature=0.1)
    assert out.scene_rep.tolist() == expected_rep
    assert np.all(out.scene[out.scene_rep] == 1.0)
    # frames keep the scene they lie in
    assert out.frame_scene.tolist() == assign_frames_to_scenes(NEAREST_IDX, scenes).tolist()


def test_scene_tie_on_distance_goes_to_earlier_frame():
    idx = np.array([0, 6, 14, 20, 26])
    # empty scene [8, 13): frame 6 is 2 before it, frame 14 is 2 after its last frame 12
    out = scene_salience(NEAREST_F, idx, np.array([[0, 8], [8, 13], [13, 30]]))
    assert out.scene_rep.tolist() == [True, True, False, True, False]


def test_semantic_queries():
    assert semantic_queries("Q?", ["A. x", "B. y"]) == ["Q?", "Q? A. x", "Q? B. y"]
    assert semantic_queries("Q?", None) == ["Q?"]
    assert semantic_queries("Q?", ["A. x"], option_queries=False) == ["Q?"]


def test_max_keeps_a_small_salient_patch_that_mean_dilutes():
    d, t_patches = 4, 16
    text = unit(1, 0, 0, 0)[None]  # (Q=1, D)
    other = unit(0, 1, 0, 0)
    # frame 0: one patch matches the query exactly, the rest and the global view do not
    p0 = np.tile(other, (t_patches, 1))
    p0[5] = unit(1, 0, 0, 0)
    # frame 1: every view is mildly similar (cos 0.3)
    mild = unit(0.3, math.sqrt(1 - 0.09), 0, 0)
    p1 = np.tile(mild, (t_patches, 1))
    glob = np.stack([other, mild])
    patches = np.stack([p0, p1])
    raw_max = semantic_raw(glob, patches, text, "max")
    raw_mean = semantic_raw(glob, patches, text, "mean")
    np.testing.assert_allclose(raw_max, [1.0, 0.3], atol=1e-9)
    np.testing.assert_allclose(raw_mean, [1.0 / 17, 0.3], atol=1e-9)
    assert np.argmax(raw_max) == 0 and np.argmax(raw_mean) == 1
    assert d == glob.shape[1]


def test_semantic_max_over_queries_and_global_view():
    glob = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])
    text = np.stack([unit(1, 0, 0), unit(0, 1, 1)])
    raw = semantic_raw(glob, None, text)
    np.testing.assert_allclose(raw, [1.0, 1 / math.sqrt(2), 1 / math.sqrt(2)], atol=1e-9)


def test_minmax():
    np.testing.assert_allclose(minmax(np.array([0.2, 0.4, 0.3])), [0.0, 1.0, 0.5], atol=1e-6)
    assert minmax(np.array([0.7, 0.7, 0.7])).tolist() == [1.0, 1.0, 1.0]  # all equal -> all 1
    assert minmax(np.array([-1.0, 1.0])).dtype == np.float32


def _inputs(seed: int, k: int = 8, d: int = 6, t: int = 3, q: int = 3):
    rng = np.random.default_rng(seed)
    glob = rng.normal(size=(k, d))
    patches = rng.normal(size=(k, t, d))
    text = rng.normal(size=(q, d))
    scenes = np.array([[0, 30], [30, 45], [45, 80]])
    idx = np.sort(rng.choice(80, size=k, replace=False))
    return glob, patches, text, scenes, idx


@pytest.mark.parametrize("preset", ["cfr", "videocfr-ref"])
@pytest.mark.parametrize("aggregation", ["max", "mean"])
def test_question_saliences_ranges_and_sum(preset, aggregation):
    for seed in range(5):
        glob, patches, text, scenes, idx = _inputs(seed)
        sc = scene_salience(glob, idx, scenes)
        out = question_saliences(sc, glob, patches, text, SalienceConfig(aggregation=aggregation),
                                 FusionConfig(preset=preset))
        for name in ("uniform", "scene", "semantic"):
            arr = getattr(out, name)
            assert arr.dtype == np.float32 and arr.min() >= 0 and arr.max() <= 1, name
        assert out.semantic.max() == 1.0 and out.semantic.min() == 0.0
        assert out.prior.min() >= 0 and np.isfinite(out.prior).all()
        assert abs(float(out.prior.sum(dtype=np.float64)) - 1) < 1e-5


def test_prior_invariant_to_query_order():
    glob, patches, text, scenes, idx = _inputs(3)
    sc = scene_salience(glob, idx, scenes)
    a = question_saliences(sc, glob, patches, text, SalienceConfig(), FusionConfig())
    b = question_saliences(sc, glob, patches, text[::-1], SalienceConfig(), FusionConfig())
    np.testing.assert_array_equal(a.prior, b.prior)


def test_cfr_preset_hand_computed():
    # K = 4: u = 1; s and r given; weights (0.1, 1, 3); τ = 0.1
    scene = np.array([1.0, 0.5, 0.0, 1.0])
    raw = np.array([0.1, 0.3, 0.2, 0.1])  # min-max -> r = [0, 1, 0.5, 0]
    glob = np.eye(4)
    text = raw[None]  # cos(e_k, text) = raw_k / |raw|: same order, same min-max
    from videocfr.precompute.saliences import SceneSaliences

    sc = SceneSaliences(scene=scene.astype(np.float32), scene_rep=np.array([1, 0, 0, 1], bool),
                        frame_scene=np.zeros(4, np.int32))
    out = question_saliences(sc, glob, None, text, SalienceConfig(), FusionConfig("cfr"))
    np.testing.assert_allclose(out.semantic, [0, 1, 0.5, 0], atol=1e-6)
    logits = (0.1 * 1 + 1.0 * scene + 3.0 * np.array([0, 1, 0.5, 0])) / 4.1 / 0.1
    # logits = [1.1, 3.6, 1.6, 1.1] / 0.41
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(out.prior, expected, rtol=1e-5)
    assert np.argmax(out.prior) == 1


def test_videocfr_ref_preset_hand_computed():
    # K = 4: semantic set = top ⌈4/4⌉ = 1 frame by raw (frame 1); scene set = reps {0, 3}
    from videocfr.precompute.saliences import SceneSaliences

    sc = SceneSaliences(scene=np.array([1, 0.5, 0, 1], np.float32),
                        scene_rep=np.array([1, 0, 0, 1], bool), frame_scene=np.zeros(4, np.int32))
    text = np.array([[0.1, 0.3, 0.2, 0.1]])
    out = question_saliences(sc, np.eye(4), None, text, SalienceConfig(),
                             FusionConfig("videocfr-ref"))
    weights = np.array([0.1 + 1, 0.1 + 3, 0.1, 0.1 + 1])  # [1.1, 3.1, 0.1, 1.1], sum 5.4
    np.testing.assert_allclose(out.prior, weights / 5.4, rtol=1e-6)


def test_bad_config():
    with pytest.raises(ValueError, match="aggregation"):
        SalienceConfig(aggregation="median")
    with pytest.raises(ValueError, match="scene_temperature"):
        SalienceConfig(scene_temperature=0)
