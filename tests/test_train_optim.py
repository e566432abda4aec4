"""The learning-rate schedules and gradient accumulation (train.optim), alone and in the trainer."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import LengthReward, config
from test_trainer import data as data  # noqa: F401  (the module-scoped cache fixture)
from videocfr.train import trainer as trainer_mod
from videocfr.train.config import TrainConfig
from videocfr.train.metrics import read_metrics
from videocfr.train.optim import Accumulator, lr_at


def test_warmup_reaches_the_peak_then_cosine_decays_to_the_floor():
    lrs = [lr_at(u, 1.0, "cosine", warmup_steps=4, total_updates=20, min_lr_ratio=0.1)
           for u in range(20)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)  # the decay starts at the peak
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.1)
    mid = lr_at(4 + 15 // 2, 1.0, "cosine", 4, 20, 0.0)  # half way: half the peak
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))


def test_linear_and_constant_schedules():
    lin = [lr_at(u, 2.0, "linear", 0, 5, 0.0) for u in range(5)]
    assert lin == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    assert {lr_at(u, 3e-4, "constant", 0, 10) for u in range(10)} == {3e-4}
    assert lr_at(0, 1.0, "constant", warmup_steps=2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cosine"):
        lr_at(0, 1.0, "step")


def test_accumulated_gradients_equal_one_pass_over_the_whole_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randn(8, 1)

    def trained(micro_batches: int) -> torch.Tensor:
        torch.manual_seed(1)
        model = torch.nn.Linear(5, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        acc = Accumulator(model, opt, None, micro_batches, max_grad_norm=0)
        for xs, ys in zip(x.chunk(micro_batches), y.chunk(micro_batches)):
            before = model.weight.detach().clone()
            acc.backward(torch.nn.functional.mse_loss(model(xs), ys))
            if acc.pending:  # no update until the last micro-batch
                assert torch.equal(before, model.weight)
        assert model.weight.grad is None  # zeroed after the update
        return model.weight.detach()

    torch.testing.assert_close(trained(1), trained(4))


def test_accumulation_config_is_validated():
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig.from_dict({"grpo": {"grad_accum_steps": 0}})
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig.from_dict({"grpo": {"lr_schedule": "exponential"}})
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TrainConfig.from_dict({"grpo": {"min_lr_ratio": 1.5}})


def test_trainer_accumulates_micro_batches_into_one_update_per_step(data, tmp_path):  # noqa: F811
    sections = {"grpo": {"grad_accum_steps": 2, "lr_schedule": "cosine", "warmup_steps": 1,
                         "min_lr_ratio": 0.1, "learning_rate": 1e-2},
                "run": {"max_steps": 3}}
    run = trainer_mod.train(config(data, tmp_path / "run", **sections),
                            extra_rewards=[LengthReward()])
    rows = read_metrics(run)
    g = 3  # test_trainer.G
    assert [r["samples"] for r in rows] == [2 * g] * 3  # two micro-batches of one prompt
    assert [r["lr"] for r in rows] == pytest.approx([1e-2, 1e-2, 1e-3])
    assert all(math.isfinite(r["loss"]) for r in rows)

    # the same run stopped after step 2 and resumed gives the same weights (the schedule and
    # the micro-batch order are functions of the step)
    part = config(data, tmp_path / "part", **{**sections, "run": {"max_steps": 2}})
    trainer_mod.train(part, extra_rewards=[LengthReward()])
    resumed = trainer_mod.train(config(data, tmp_path / "part", **sections), resume=True,
                                extra_rewards=[LengthReward()])
    assert [r["lr"] for r in read_metrics(resumed)] == pytest.approx([1e-2, 1e-2, 1e-3])
    a = load_file(str(run / "checkpoints" / "step-000003" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step-000003" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
