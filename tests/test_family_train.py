"""CF-GRPO with T-GRPO on, end to end on CPU, for the families beside Qwen2.5-VL (whose runs are
tests/test_trainer.py's): the tiny random Qwen3-VL and Qwen3.5 on the trainer's fixture cache."""

from __future__ import annotations

import math

import pytest
from test_train_data import make_train_cache
from test_trainer import LengthReward, config
from videocfr.train import trainer as trainer_mod
from videocfr.train.metrics import read_metrics

# Qwen3.5 cannot share a prefill (its adapter says why): it runs the plain engine.
ENGINES = {"qwen3_vl": "shared_prefill", "qwen3_5": "generate"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_train_cache(tmp_path_factory.mktemp("family_cache"), prior_questions=1)


@pytest.mark.parametrize("family", sorted(ENGINES))
def test_cf_grpo_with_temporal_grpo(family, data, tmp_path):
    cfg = config(data, tmp_path / "run", model={"tiny_family": family},
                 reward={"temporal": True}, run={"max_steps": 2},
                 rollout={"engine": ENGINES[family], "vision_once": True})
    run = trainer_mod.train(cfg, extra_rewards=[LengthReward()])
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["samples"] == 3
        assert 0 <= r["r_cov_mean"] <= r["r_cov_max"] <= 1  # α met the prior
        assert r["alpha_entropy"] > 0


def test_qwen3_5_refuses_the_shared_prefill(data, tmp_path):
    cfg = config(data, tmp_path / "run", model={"tiny_family": "qwen3_5"},
                 rollout={"engine": "shared_prefill"})
    with pytest.raises(ValueError, match="qwen3_5.*Gated-DeltaNet.*rollout.engine: generate"):
        trainer_mod.train(cfg)
