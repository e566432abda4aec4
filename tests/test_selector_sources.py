"""Bad input: margins of another VLM or cache, a selector checkpoint of another embedding model.

Each is refused with a message naming both sides: the VLM (or cache, or CLIP model) the thing
was made with, and the one training (or selection) names.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from synthetic_cache import make_cache
from videocfr.cache_format import CacheError
from videocfr.cache_format.additions import load_addition
from videocfr.selector import margins as margins_mod
from videocfr.selector.config import SelectorDataConfig, SelectorRewardConfig
from videocfr.selector.data import load_samples
from videocfr.selector.pairs import PairReward, pair_config, write_pair_cache
from videocfr.selector.trainer import train


class FakeMargins:
    """Margins that vary with the subset (a stand-in for the scorer: no VLM is run)."""

    def margins(self, samples, subsets):
        return np.array([float(np.sum(p)) for p in subsets], np.float32)


def _margins_by_cli(cache, *model_args):
    """Compute the parts with FakeMargins, then let the CLI finalize (it records the VLM)."""
    from videocfr.cli import main

    margins_mod.run_job(cache, FakeMargins(), num_subsets=4, subset_size=2, seed=0)
    assert main(["precompute", "margins", "--cache", str(cache), *model_args, "--finalize",
                 "--num-shards", "1"]) == 0


def test_margins_record_the_vlm_and_the_cache(tmp_path):
    cache = tmp_path / "c"
    make_cache(cache, dim=16)
    _margins_by_cli(cache, "--tiny-scorer", "--tiny-family", "qwen3_vl")
    meta = load_addition(cache, "margins").meta
    assert meta["vlm"] == "tiny:qwen3_vl"
    assert meta["cache"] == margins_mod.cache_identity(cache)
    assert margins_mod.vlm_identity("tiny") == "tiny:qwen2_5_vl"
    assert margins_mod.vlm_identity(str(tmp_path)) == str(tmp_path.resolve())


def test_margins_of_another_vlm_are_refused_naming_both(tmp_path):
    cache = tmp_path / "c"
    make_cache(cache, dim=16)
    _margins_by_cli(cache, "--tiny-scorer", "--tiny-family", "qwen3_vl")
    data = SelectorDataConfig(cache_dir=str(cache), min_margin_var=0.0)
    with pytest.raises(CacheError, match=r"'tiny:qwen3_vl'.*'tiny:qwen2_5_vl'"):
        load_samples(data, vlm=margins_mod.vlm_identity(SelectorRewardConfig(tiny=True)
                                                        .vlm_spec()))
    # the trainer names its reward's VLM: reward.tiny is Qwen2.5-VL's tiny model
    cfg = pair_config(cache, tmp_path / "run", steps=1)
    cfg.data.min_margin_var = 0.0
    with pytest.raises(CacheError, match=r"'tiny:qwen3_vl'.*'tiny:qwen2_5_vl'"):
        train(cfg)
    # the same VLM passes, and a reward naming no VLM (needle) is not checked
    assert load_samples(data, vlm="tiny:qwen3_vl")[1]["questions"] > 0
    assert load_samples(data)[1]["questions"] > 0


def test_margins_of_another_checkpoint_path_are_refused_naming_both(tmp_path):
    cache, vlm_a, vlm_b = tmp_path / "c", tmp_path / "vlm-a", tmp_path / "vlm-b"
    vlm_a.mkdir(), vlm_b.mkdir()
    make_cache(cache, dim=16)
    margins_mod.run_job(cache, FakeMargins(), num_subsets=4, subset_size=2, seed=0)
    margins_mod.finalize(cache, 1, {"model": str(vlm_a),
                                    "vlm": margins_mod.vlm_identity(str(vlm_a))})
    with pytest.raises(CacheError) as err:
        load_samples(SelectorDataConfig(cache_dir=str(cache), min_margin_var=0.0),
                     vlm=margins_mod.vlm_identity(str(vlm_b)))
    assert str(vlm_a.resolve()) in str(err.value) and str(vlm_b.resolve()) in str(err.value)


def test_margins_copied_from_another_cache_are_refused_naming_both(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_cache(a, dim=16, seed=0)
    make_cache(b, dim=16, seed=7)  # the same config (so the same config hash), other records
    margins_mod.run_job(a, FakeMargins(), num_subsets=4, subset_size=2, seed=0)
    margins_mod.finalize(a, 1, {"model": "fake"})
    shutil.copytree(a / "additions", b / "additions")
    assert load_addition(b, "margins")  # the config hash alone does not tell them apart
    with pytest.raises(CacheError) as err:
        load_samples(SelectorDataConfig(cache_dir=str(b), min_margin_var=0.0))
    assert str(a.resolve()) in str(err.value) and str(b.resolve()) in str(err.value)
    with pytest.raises(CacheError, match="computed on the cache"):
        margins_mod.load_margins(b)
    assert len(margins_mod.load_margins(a)) > 0


@pytest.fixture()
def pair_run(tmp_path):
    """A selector checkpoint trained (2 steps) on a cache of the synthetic-pairs model, D=16."""
    kinds = write_pair_cache(tmp_path / "train", 16, seed=1, dim=16)
    return train(pair_config(tmp_path / "train", tmp_path / "run", steps=2),
                 reward=PairReward(kinds))


def test_selector_checkpoint_of_another_embedding_model_is_refused(tmp_path, pair_run, capsys):
    from videocfr.cache_format import Cache
    from videocfr.selector.checkpoint import read_state
    from videocfr.selector.select import load_refocus_strategy, select_all

    from videocfr.cli import main

    assert read_state(pair_run)["embedding_model"] == {
        "name": "synthetic-pairs", "pretrained": "random", "embed_dim": 16}
    other = tmp_path / "other"
    make_cache(other, dim=16, k=8)  # model "synthetic": the same D, another CLIP model
    assert main(["select", "--cache", str(other), "--checkpoint", str(pair_run), "--n", "2",
                 "--addition", "refocus-n2"]) == 2
    err = capsys.readouterr().err
    assert "'synthetic-pairs'" in err and "'synthetic'" in err and str(other) in err
    strategy = load_refocus_strategy(pair_run)
    with pytest.raises(ValueError, match="'synthetic-pairs'.*'synthetic'"):
        select_all(Cache(other), strategy, 2)
    chosen, counts = select_all(Cache(tmp_path / "train"), strategy, 2)  # its own cache: fine
    assert counts["selected"] == 16


def test_selector_resume_on_another_embedding_model_is_refused(tmp_path, pair_run):
    other = tmp_path / "other"
    make_cache(other, dim=16, k=8)
    cfg = pair_config(other, pair_run, steps=3)
    with pytest.raises(ValueError, match="'synthetic-pairs'.*'synthetic'"):
        train(cfg, resume=True, reward=PairReward({}))
