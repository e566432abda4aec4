"""The CF-GRPO loop end to end on a tiny random Qwen2.5-VL, on CPU, on a fixture cache.

A random tiny model never writes `<answer>B</answer>`, so accuracy, format and (gated by
accuracy) the CF term are all 0 and every advantage would be 0. To check that the loss moves
the weights, runs add a `length` reward (an `extra_rewards` callable, the trainer's extension
point) that differs between completions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_train_data import make_train_cache
from videocfr.train import trainer as trainer_mod
from videocfr.train.cli import main as cli_main
from videocfr.train.config import TrainConfig
from videocfr.train.metrics import read_metrics
from videocfr.vlm.tiny import tiny_qwen2_5_vl

G = 3


class LengthReward:
    """0.01 per character of the completion: varies within a group, so advantages are != 0."""

    __name__ = "length"

    def __call__(self, prompts, completions, **columns):
        return [0.01 * len(c) for c in completions]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return make_train_cache(tmp_path_factory.mktemp("trainer_cache"), prior_questions=1)


def config(fixture, out: Path, **sections) -> TrainConfig:
    base = {
        "model": {"tiny": True, "tiny_seed": 0},
        "data": {"cache_dir": str(fixture["cache"]), "video_root": str(fixture["videos"])},
        "grpo": {"num_generations": G, "max_completion_length": 12, "learning_rate": 1e-2,
                 "beta": 0.04, "batch_size": 1},
        "run": {"max_steps": 3, "output_dir": str(out), "checkpoint_every": 1,
                "keep_checkpoints": 0, "device": "cpu", "tensorboard": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return TrainConfig.from_dict(base)


def initial_weights() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny_qwen2_5_vl(0).state_dict().items()}


def test_three_steps_finite_loss_and_weights_change(data, tmp_path):
    run = trainer_mod.train(config(data, tmp_path / "run"), extra_rewards=[LengthReward()])
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["kl"])
        assert 0 <= r["r_cov_mean"] <= r["r_cov_max"] <= 1  # α and the prior met
        assert r["alpha_entropy"] > 0 and r["samples"] == G
        assert r["no_prior"] == 0 and r["reward/length"] > 0
        assert 0 < r["cf_share"] < 1 and r["completion_length"] > 0
    after = load_file(str(run / "checkpoints" / "step-000003" / "model.safetensors"))
    before = initial_weights()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, "most parameter tensors should have moved"
    assert all(torch.isfinite(v).all() for v in after.values())
    assert (run / "final" / "config.json").is_file()  # loadable as model.path


def test_frozen_tower_stays_and_completions_are_logged_with_their_alpha(data, tmp_path):
    # model.freeze_vision: the language model trains, the vision tower does not move;
    # run.log_completions: one row per completion with its key, R_acc, CF term and α
    run = trainer_mod.train(config(data, tmp_path / "run", model={"freeze_vision": True},
                                   run={"max_steps": 2, "log_completions": True}),
                            extra_rewards=[LengthReward()])
    after = load_file(str(run / "checkpoints" / "step-000002" / "model.safetensors"))
    before = initial_weights()
    tower = [k for k in before if ".visual." in k]
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in tower)
    rows = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] * G + [2] * G
    keys = set(data_keys(data))
    for r in rows:
        assert (r["video_id"], r["question_id"]) in keys and r["accuracy"] in (0.0, 1.0)
        assert len(r["alpha"]) == 4 and abs(sum(r["alpha"]) - 1) < 1e-4  # K = 8: 4 groups
        assert isinstance(r["completion"], str)


def data_keys(fixture) -> list[tuple[str, str]]:
    from videocfr.cache_format import Cache

    return list(Cache(fixture["cache"]).keys())


def test_without_advantage_signal_nothing_moves(data, tmp_path):
    # All rewards 0 for a random model (see module docstring), β·KL has zero gradient at
    # π = π_ref, no weight decay: the update must be exactly zero. Guards against the loss
    # moving weights for a reason other than advantages.
    run = trainer_mod.train(config(data, tmp_path / "run", run={"max_steps": 1}))
    assert read_metrics(run)[0]["reward"] == 0
    after = load_file(str(run / "checkpoints" / "step-000001" / "model.safetensors"))
    before = initial_weights()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_missing_priors_are_counted_not_zero_filled(data, tmp_path):
    # The priors come from a cache that holds only question q0 of each video: q1 has none.
    cfg = config(data, tmp_path / "run", run={"max_steps": 4},
                 data={"prior_cache_dir": str(data["priors"]), "allow_missing_prior": True,
                       "shuffle": False})
    rows = read_metrics(trainer_mod.train(cfg))
    # sorted keys: (vid000,q0) (vid000,q1) (vid001,q0) (vid001,q1); one prompt per step
    assert [r["no_prior"] for r in rows] == [0, G, 0, G]
    assert [r["no_prior_total"] for r in rows] == [0, G, G, 2 * G]
    assert rows[1]["r_cov_mean"] is None and rows[0]["r_cov_mean"] is not None

    strict = config(data, tmp_path / "strict", data={"prior_cache_dir": str(data["priors"]),
                                                     "shuffle": False})
    with pytest.raises(KeyError, match="allow_missing_prior"):
        trainer_mod.train(strict)


def test_resume_continues_exactly(data, tmp_path):
    full = trainer_mod.train(config(data, tmp_path / "full"), extra_rewards=[LengthReward()])
    part = config(data, tmp_path / "part", run={"max_steps": 2})
    trainer_mod.train(part, extra_rewards=[LengthReward()])
    with pytest.raises(FileExistsError, match="--resume"):
        trainer_mod.train(config(data, tmp_path / "part"))
    resumed = trainer_mod.train(config(data, tmp_path / "part"), resume=True,
                                extra_rewards=[LengthReward()])
    assert [r["step"] for r in read_metrics(resumed)] == [1, 2, 3]
    a = load_file(str(full / "checkpoints" / "step-000003" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step-000003" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert json.loads((resumed / "checkpoints" / "step-000003" / "state.json").read_text())[
        "step"] == 3


def test_beta_zero_loads_no_reference_and_several_updates_work(data, tmp_path, monkeypatch):
    loads = []
    real_load = trainer_mod.load_policy
    monkeypatch.setattr(trainer_mod, "load_policy", lambda cfg: loads.append(1) or real_load(cfg))
    cfg = config(data, tmp_path / "run", grpo={"beta": 0.0, "updates_per_batch": 2},
                 run={"max_steps": 2})
    rows = read_metrics(trainer_mod.train(cfg, extra_rewards=[LengthReward()]))
    assert len(loads) == 1  # the policy only
    assert all(math.isfinite(r["loss"]) and r["kl"] == 0 for r in rows)
    # the second update of a batch sees ρ != 1 (the first update moved the policy)
    assert any(r["ratio_mean"] != 1.0 for r in rows)


def test_cli_reports_a_missing_cache(tmp_path, capsys):
    status = cli_main(["--config", "configs/train/tiny.yaml", "--output-dir",
                       str(tmp_path / "run"), f"data.cache_dir={tmp_path / 'nowhere'}"])
    assert status == 2
    assert "make precompute DATASET=demo" in capsys.readouterr().err


def test_cli_runs_and_prints_the_run_directory(data, tmp_path, capsys):
    status = cli_main(["--config", "configs/train/tiny.yaml", "--output-dir",
                       str(tmp_path / "run"), f"data.cache_dir={data['cache']}",
                       f"data.video_root={data['videos']}", "run.max_steps=1",
                       "grpo.num_generations=2", "grpo.max_completion_length=8"])
    assert status == 0
    assert f"run directory: {tmp_path / 'run'}" in capsys.readouterr().out
    assert len(read_metrics(tmp_path / "run")) == 1
    # the exported policy loads by path, the way real checkpoints are loaded
    status = cli_main(["--config", "configs/train/tiny.yaml", "--output-dir",
                       str(tmp_path / "again"), f"model.path={tmp_path / 'run' / 'final'}",
                       f"data.cache_dir={data['cache']}", f"data.video_root={data['videos']}",
                       "run.max_steps=1", "grpo.num_generations=2",
                       "grpo.max_completion_length=8"])
    assert status == 0 and len(read_metrics(tmp_path / "again")) == 1
    saved = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert saved["model"]["tiny"] is False
