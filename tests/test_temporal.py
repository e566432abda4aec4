"""T-GRPO temporal reward and the length reward (METHOD §5), with stub policies.

A stub policy reads the frames it is shown: frame k of the synthetic clip is filled with the
value k, so "the frames are in order" is visible to it exactly as it is to a real model (only
the pictures move; indices, grid and timestamps stay).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from videocfr.train import phases
from videocfr.train.config import RewardConfig, TrainConfig
from videocfr.train.data import Sample
from videocfr.train.metrics import read_metrics
from videocfr.train.scoring import StepRewards
from videocfr.train.temporal import (
    length_reward,
    shuffle_sample_frames,
    shuffled_order,
    temporal_bonus,
)

K, G = 8, 4
PRIOR = np.full(K, 1 / K, np.float32)


def sample(answer: str = "B", k: int = K) -> Sample:
    frames = np.broadcast_to(np.arange(k, dtype=np.uint8)[:, None, None, None],
                             (k, 4, 4, 3)).copy()
    return Sample("v0", "q0", "What happens first?", answer, "multiple choice", frames,
                  np.arange(0, 10 * k, 10), 25.0, 10 * k, options=["A. x", "B. y"])


def frames_in_order(s: Sample) -> bool:
    values = s.frames[:, 0, 0, 0].astype(int)
    return bool(np.all(np.diff(values) > 0))


def ordered_only_policy(s: Sample, n: int) -> list[str]:
    """Right (B) only when the frames are in temporal order."""
    return ["<think>t</think><answer>" + ("B" if frames_in_order(s) else "A") + "</answer>"] * n


def shuffled_better_policy(s: Sample, n: int) -> list[str]:
    """Right on half the ordered completions, on all the shuffled ones: below μ."""
    if frames_in_order(s):
        return ["<think>t</think><answer>" + ("B" if i % 2 else "A") + "</answer>"
                for i in range(n)]
    return ["<think>t</think><answer>B</answer>"] * n


def run_policy(policy, s: Sample, seed=(0, 0, 0)):
    rewards = StepRewards(RewardConfig(temporal=True, len_control=True))
    shuffled = shuffle_sample_frames(s, seed)
    ordered_out = policy(s, G)
    shuffled_out = policy(shuffled, G // 2)
    cols = {"answer": [s.answer] * G, "problem_type": [s.problem_type] * G}
    scols = {"answer": [s.answer] * (G // 2), "problem_type": [s.problem_type] * (G // 2)}
    return rewards(ordered_out, cols, frame_usage=[None] * G, priors=[None] * G,
                   lengths=[400, 100, 400, 600], num_generations=G, shuffled=shuffled_out,
                   shuffled_columns=scols, num_shuffled=G // 2)


def test_temporal_bonus_applied_for_a_policy_right_only_on_ordered_frames():
    scores = run_policy(ordered_only_policy, sample())
    assert scores.accuracy == [1.0] * G
    assert scores.temporal.applied.tolist() == [True]
    assert scores.temporal.acc_ordered.tolist() == [1.0]
    assert scores.temporal.acc_shuffled.tolist() == [0.0]
    np.testing.assert_allclose(scores.temporal.bonus, [0.3] * G)
    # R = acc + bonus + format + length (+0.2 for the 400-token completions)
    np.testing.assert_allclose(scores.total, [2.5, 2.3, 2.5, 2.3], rtol=1e-6)
    assert scores.metrics["temporal/applied"] == 1.0
    assert scores.metrics["reward/len_control"] == pytest.approx(0.1)


def test_temporal_no_bonus_below_mu():
    scores = run_policy(shuffled_better_policy, sample())
    # ordered mean 0.5 < 0.8 x shuffled mean 1.0
    assert scores.temporal.acc_ordered.tolist() == [0.5]
    assert scores.temporal.acc_shuffled.tolist() == [1.0]
    assert scores.temporal.applied.tolist() == [False]
    assert scores.temporal.bonus.tolist() == [0.0] * G
    assert scores.metrics["reward/temporal"] == 0.0


@pytest.mark.parametrize(
    "ordered, shuffled, applied, bonus",
    [([1, 1, 0, 0], [0.5, 0.5], True, [0.3, 0.3, 0, 0]),  # same accuracy either way: 0.5 >= 0.4
     ([0.4, 0.4, 0.4, 0.4], [0.5, 0.5], True, [0.3] * 4),  # exactly μ: >= applies
     ([0.39, 0.39, 0.39, 0.39], [0.5, 0.5], False, [0] * 4),  # just below μ
     ([0.1, 0.11, 1, 0], [0, 0], True, [0, 0.3, 0.3, 0]),  # R_acc must exceed 0.1
     ([0, 0, 0, 0], [0, 0], True, [0] * 4)],  # nothing right anywhere: applied, nobody paid
    ids=["equal", "at-mu", "below-mu", "threshold", "all-wrong"],
)
def test_temporal_rule_known_numbers(ordered, shuffled, applied, bonus):
    r = temporal_bonus(ordered, shuffled, 4, 2)
    assert r.applied.tolist() == [applied]
    np.testing.assert_allclose(r.bonus, bonus)


def test_temporal_rule_is_per_prompt():
    r = temporal_bonus([1, 1, 0, 0], [0, 1], num_generations=2, num_shuffled=1)
    assert r.applied.tolist() == [True, False]
    np.testing.assert_allclose(r.bonus, [0.3, 0.3, 0, 0])
    with pytest.raises(ValueError, match="groups"):
        temporal_bonus([1, 1, 0, 0], [0, 1, 1], num_generations=2, num_shuffled=1)


def test_temporal_shuffle_is_seeded_never_identity_and_keeps_indices():
    s = sample()
    a = shuffle_sample_frames(s, (0, 3, 7))
    b = shuffle_sample_frames(s, (0, 3, 7))
    c = shuffle_sample_frames(s, (0, 4, 7))
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert not frames_in_order(a) and frames_in_order(s)
    np.testing.assert_array_equal(a.frame_indices, s.frame_indices)
    assert sorted(a.frames[:, 0, 0, 0].tolist()) == list(range(K))
    for seed in range(50):  # two frames: the only non-identity order is the swap
        assert shuffled_order(2, (seed,)).tolist() == [1, 0]


def test_length_reward_range_and_threshold():
    got = length_reward([1, 1, 1, 1, 0.1, 0.5], [319, 320, 512, 513, 400, 400])
    np.testing.assert_allclose(got, [0, 0.2, 0.2, 0, 0, 0.2])


def test_temporal_cf_gate_reads_accuracy_before_the_bonus():
    rewards = StepRewards(RewardConfig(temporal=True, gate="soft", cf_lambda=1.0))
    alpha = torch.full((K // 2,), 1 / (K // 2))
    out = rewards(["<answer>8</answer>"] * 2, {"answer": ["10"] * 2,
                                               "problem_type": ["regression"] * 2},
                  frame_usage=[alpha, alpha], priors=[PRIOR, PRIOR], lengths=[5, 5],
                  num_generations=2, shuffled=["<answer>0</answer>"],
                  shuffled_columns={"answer": ["10"], "problem_type": ["regression"]},
                  num_shuffled=1)
    assert out.temporal.bonus.tolist() == [0.3, 0.3]
    # gate = clip(0.8) = 0.8, not clip(1.1) = 1; r_cov of uniform α and prior = 1/4 ... x 4 groups
    assert out.cf == [pytest.approx(0.8 * 0.25), pytest.approx(0.8 * 0.25)]
    with pytest.raises(ValueError, match="shuffled"):
        rewards(["x"], {"answer": ["1"], "problem_type": ["regression"]}, frame_usage=[None],
                priors=[None], lengths=[1], num_generations=1)


def test_temporal_extra_reward_names_must_not_clash():
    class Bad:
        __name__ = "accuracy"

        def __call__(self, prompts, completions, **columns):
            return [0.0] * len(completions)

    with pytest.raises(ValueError, match="distinct names"):
        StepRewards(RewardConfig(), [Bad()])


# --- the trainer with a stub policy ---------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from test_train_data import make_train_cache

    return make_train_cache(tmp_path_factory.mktemp("temporal_cache"), n_videos=1,
                            n_questions=1)


def _stub_trainer(data, tmp_path, monkeypatch, right_when_ordered: bool):
    """One trainer step whose rollouts answer B (right) only on ordered (or only on
    shuffled) frames; the real engine still makes the token sequences."""
    from videocfr.train import trainer as trainer_mod
    from videocfr.train.data import CacheSamples, process
    from videocfr.vlm.tiny import tiny_processor

    sample0 = CacheSamples(data["cache"], str(data["videos"]))[0]
    ordered_pixels = process(tiny_processor(), [sample0])["pixel_values_videos"]
    calls = []
    real = phases.sample_rollouts

    def stub(run, batch, num_generations):
        rollout = real(run, batch, num_generations)
        ordered = torch.equal(batch["pixel_values_videos"], ordered_pixels)
        calls.append((ordered, num_generations, batch["video_grid_thw"].tolist()))
        right = ordered == right_when_ordered
        rollout.completions = [f"<think>t</think><answer>{'B' if right else 'C'}</answer>"
                               ] * len(rollout.completions)
        return rollout

    monkeypatch.setattr(phases, "sample_rollouts", stub)
    cfg = TrainConfig.from_dict({
        "model": {"tiny": True},
        "data": {"cache_dir": str(data["cache"]), "video_root": str(data["videos"]),
                 "shuffle": False},
        "grpo": {"num_generations": G, "max_completion_length": 6, "beta": 0.04},
        "reward": {"temporal": True, "len_control": True},
        "run": {"max_steps": 1, "output_dir": str(tmp_path / "run"), "device": "cpu",
                "tensorboard": False, "checkpoint_every": 0},
    })
    (row,) = read_metrics(trainer_mod.train(cfg))
    return row, calls


def test_temporal_trainer_pays_a_policy_right_only_on_ordered_frames(data, tmp_path,
                                                                      monkeypatch):
    row, calls = _stub_trainer(data, tmp_path, monkeypatch, right_when_ordered=True)
    # one ordered call of G, one shuffled call of G/2 on the same video grid
    assert [(o, n) for o, n, _ in calls] == [(True, G), (False, G // 2)]
    assert calls[0][2] == calls[1][2]
    assert row["temporal/applied"] == 1.0 and row["reward/temporal"] == pytest.approx(0.3)
    assert row["temporal/acc_ordered"] == 1.0 and row["temporal/acc_shuffled"] == 0.0
    assert row["reward/len_control"] == 0.0  # 6-token completions are far below 320
    assert row["samples"] == G  # the shuffled completions are not trained on
    assert row["shuffled_rollout_s"] > 0 and math.isfinite(row["loss"])
    assert row["reward"] == pytest.approx(1.0 + 0.3 + 1.0 + row["reward/cf"], rel=1e-5)


def test_temporal_trainer_no_bonus_for_a_policy_right_only_on_shuffled_frames(data, tmp_path,
                                                                            monkeypatch):
    row, _ = _stub_trainer(data, tmp_path, monkeypatch, right_when_ordered=False)
    assert row["temporal/applied"] == 0.0 and row["reward/temporal"] == 0.0
    assert row["temporal/acc_ordered"] == 0.0 and row["temporal/acc_shuffled"] == 1.0
