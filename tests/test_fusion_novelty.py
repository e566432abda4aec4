"""The novelty source and the cfr-novelty preset (METHOD §2-3), and re-fusing stored records."""

import numpy as np
import pytest
from synthetic_cache import make_question, make_video
from videocfr.cache_format.fusion import (
    PRESET_WEIGHTS,
    FusionConfig,
    fuse,
    fuse_record,
    novelty_salience,
)


def test_novelty_finds_the_outlier_frame():
    rng = np.random.default_rng(0)
    base = rng.standard_normal(16)
    emb = base + 0.05 * rng.standard_normal((10, 16))
    emb[6] = rng.standard_normal(16)  # unlike every other frame
    n = novelty_salience(emb)
    assert n.dtype == np.float32 and n.shape == (10,)
    assert int(np.argmax(n)) == 6 and n[6] == pytest.approx(1.0) and n.min() == pytest.approx(0.0)


def test_novelty_by_hand():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mean = np.array([2.0, 1.0]) / np.sqrt(5.0)
    dist = 1 - emb @ mean
    expected = (dist - dist.min()) / (dist.max() - dist.min())
    np.testing.assert_allclose(novelty_salience(emb), expected, atol=1e-6)
    assert novelty_salience(np.ones((4, 3))).tolist() == [1.0] * 4  # all alike -> all 1


def test_preset_weights_fill_unset_fields():
    assert FusionConfig().weights == PRESET_WEIGHTS["cfr"] == (0.1, 1.0, 3.0, 0.0)
    assert FusionConfig("cfr-novelty").weights == (0.1, 1.0, 3.0, 3.0)
    assert FusionConfig("cfr-novelty", w_semantic=0.0).weights == (0.1, 1.0, 0.0, 3.0)
    with pytest.raises(ValueError, match="w_novelty"):
        FusionConfig("videocfr-ref", w_novelty=1.0)
    with pytest.raises(ValueError, match="finite"):
        FusionConfig(w_scene=float("nan"))


def test_cfr_novelty_is_cfr_with_a_fourth_source():
    k = 6
    rng = np.random.default_rng(1)
    u, s, r, nv = np.ones(k), rng.uniform(size=k), rng.uniform(size=k), rng.uniform(size=k)
    p = fuse(u, s, r, r, np.zeros(k, bool), FusionConfig("cfr-novelty"), novelty=nv)
    logit = (0.1 * u + 1 * s + 3 * r + 3 * nv) / 7.1 / 0.1
    expected = np.exp(logit - logit.max())
    np.testing.assert_allclose(p, expected / expected.sum(), atol=1e-6)
    with pytest.raises(ValueError, match="novelty"):
        fuse(u, s, r, r, np.zeros(k, bool), FusionConfig("cfr-novelty"))
    # weight 0 on novelty: the cfr prior, whatever novelty says
    np.testing.assert_allclose(fuse(u, s, r, r, np.zeros(k, bool), FusionConfig("cfr"), novelty=nv),
                               fuse(u, s, r, r, np.zeros(k, bool), FusionConfig("cfr")))


def test_fuse_record_reproduces_the_stored_prior_and_refuses():
    v = make_video("v", k=8)
    q = make_question(v, "q0")
    np.testing.assert_allclose(fuse_record(v, q, FusionConfig("cfr")), q.prior, atol=1e-7)
    p = fuse_record(v, q, FusionConfig("cfr-novelty"))
    assert p.shape == (8,) and abs(float(p.sum()) - 1) < 1e-5
    assert not np.allclose(p, q.prior)
    scene_only = fuse_record(v, q, FusionConfig(w_semantic=0.0))
    assert int(np.argmax(scene_only)) in np.flatnonzero(v.scene_rep)
