"""The trainer's learning check: the CF reward's signal reaches the policy (`pytest -k learn`).

With the CF term ungated (configs/train/ablation_ungated.yaml), the only reward a random tiny
model gets is λ·r_cov, so GRPO must move its frame usage α toward the frames the prior favours.
One (video, question) pair; two caches differ only in its prior: 90% of the mass on temporal
group 0 in one, on group 3 in the other. Two runs from the same weights and seed, one per cache.

Measured on this machine (4 seeds, 40 steps, α averaged over the last 8): the run rewarded
toward group 0 ends with α_0 higher by 0.10-0.19 than the run rewarded toward group 3, and the
contrast below was 0.08-0.19. In absolute terms r_cov need not rise: training a random model
flattens its α whatever the reward (both runs drift toward uniform); the test therefore compares
the two runs. If the reward never reaches the loss (advantages zero, the CF term dropped, α
taken from the wrong tokens), the two runs are the same run and the contrast is 0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_cache import TEST_CONFIG, TEST_MODEL, make_question, make_video
from videocfr.cache_format import ShardWriter, finalize_cache
from videocfr.train import phases
from videocfr.train import trainer as trainer_mod
from videocfr.train.config import load_config
from videos import segment_frames, write_clip

K = 8  # 4 temporal groups
NUM_FILE_FRAMES = 250
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "ablation_ungated.yaml"


def peaked_prior(group: int) -> np.ndarray:
    """90% of the mass on the two frames of `group`, the rest spread evenly."""
    prior = np.full(K, 0.1 / (K - 2), np.float32)
    prior[2 * group:2 * group + 2] = 0.45
    return prior / prior.sum()


def write_cache(root: Path, group: int) -> Path:
    root.mkdir(parents=True)
    write_clip(root / "vid000.mp4", segment_frames([60, 180], NUM_FILE_FRAMES, (96, 64), seed=0))
    with ShardWriter(root / "cache", TEST_CONFIG, embed_dim=16, model=TEST_MODEL) as writer:
        video = make_video("vid000", k=K, seed=0, num_frames=NUM_FILE_FRAMES, path="vid000.mp4")
        question = make_question(video, "q0", seed=0)
        writer.add(video, [dataclasses.replace(question, prior=peaked_prior(group))])
    finalize_cache(root / "cache")
    return root


def frame_usage_of_run(root: Path, out: Path, monkeypatch) -> torch.Tensor:
    """α of every completion of every step (float [steps, G, groups])."""
    seen: list[torch.Tensor] = []
    real = phases.frame_usage

    def recording(*args, **kwargs):
        alphas = real(*args, **kwargs)
        seen.append(torch.stack(alphas))
        return alphas

    monkeypatch.setattr(phases, "frame_usage", recording)
    cfg = load_config(CONFIG, [f"data.cache_dir={root / 'cache'}", f"data.video_root={root}",
                               f"run.output_dir={out}", "run.tensorboard=false"])
    trainer_mod.train(cfg)
    assert len(seen) == cfg.run.max_steps
    return torch.stack(seen)


@pytest.mark.slow
def test_ungated_cf_reward_learns_to_use_the_prior_frames(tmp_path, monkeypatch):
    toward0 = frame_usage_of_run(write_cache(tmp_path / "g0", 0), tmp_path / "run0", monkeypatch)
    toward3 = frame_usage_of_run(write_cache(tmp_path / "g3", 3), tmp_path / "run3", monkeypatch)
    assert torch.equal(toward0[0], toward3[0])  # same weights, same seed: the same first step
    end0, end3 = toward0[-8:].mean(dim=(0, 1)), toward3[-8:].mean(dim=(0, 1))
    # each run covers its own prior's group more than the other run does
    contrast = float((end0[0] - end0[3]) - (end3[0] - end3[3]))
    assert contrast > 0.03, (f"the CF reward did not steer frame usage: α at the end "
                             f"{end0.tolist()} (toward group 0) vs {end3.tolist()} (toward 3)")
    r_cov0 = [float(peaked_prior(0).reshape(-1, 2).sum(1) @ a.mean(0).numpy()) for a in toward0]
    assert np.mean(r_cov0[-8:]) > float(peaked_prior(0).reshape(-1, 2).sum(1)
                                        @ end3.numpy())  # r_cov under run 0's own prior
