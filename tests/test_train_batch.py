"""Batches of several prompts with ragged videos, and micro-batches prepared by background workers.

The fixture cache holds two real clips of different sizes (96x64 and 128x80) with different
numbers of cached frames (K = 8 and K = 12), so a batch of two prompts carries two video grids
of different lengths and two priors of different lengths.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthetic_cache import TEST_CONFIG, TEST_MODEL, make_question, make_video
from test_trainer import LengthReward
from videocfr.cache_format import ShardWriter, finalize_cache
from videocfr.train import trainer as trainer_mod
from videocfr.train.config import TrainConfig
from videocfr.train.data import CacheSamples, batch_indices
from videocfr.train.loader import MicroBatches, batch_loader
from videocfr.train.metrics import read_metrics
from videocfr.vlm.tiny import tiny_processor
from videos import segment_frames, write_clip

NUM_FILE_FRAMES = 250
VIDEOS = {"vid000": (8, (96, 64)), "vid001": (12, (128, 80))}  # K, (width, height)
G = 2


@pytest.fixture(scope="module")
def ragged(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ragged")
    with ShardWriter(root / "cache", TEST_CONFIG, embed_dim=16, model=TEST_MODEL) as writer:
        for i, (vid, (k, size)) in enumerate(VIDEOS.items()):
            write_clip(root / f"{vid}.mp4", segment_frames([90], NUM_FILE_FRAMES, size, seed=i))
            video = make_video(vid, k=k, seed=i, num_frames=NUM_FILE_FRAMES, path=f"{vid}.mp4")
            writer.add(video, [make_question(video, f"q{j}", seed=10 * i + j) for j in range(2)])
    finalize_cache(root / "cache")
    return {"cache": root / "cache", "videos": root}


def config(fixture, out: Path, **sections) -> TrainConfig:
    base = {
        "model": {"tiny": True},
        "data": {"cache_dir": str(fixture["cache"]), "video_root": str(fixture["videos"])},
        "grpo": {"num_generations": G, "max_completion_length": 8, "learning_rate": 1e-2,
                 "beta": 0.04, "batch_size": 2},
        "run": {"max_steps": 2, "output_dir": str(out), "checkpoint_every": 0,
                "device": "cpu", "tensorboard": False},
    }
    for name, values in sections.items():
        base[name].update(values)
    return TrainConfig.from_dict(base)


def micro_batches(fixture, count: int = 4) -> MicroBatches:
    samples = CacheSamples(fixture["cache"], str(fixture["videos"]))
    return MicroBatches(samples, tiny_processor(), batch_size=2, seed=0, shuffle=True, rank=0,
                        world_size=1, first=1, count=count)


def mixes_videos(samples) -> bool:
    """Two videos among the samples (Sample objects or (video_id, question_id) keys)."""
    return len({getattr(s, "video_id", None) or s[0] for s in samples}) == 2


def test_a_batch_of_ragged_videos_keeps_each_video_its_own_grid(ragged):
    batch = micro_batches(ragged)[0]  # with seed 0, every batch mixes the two videos
    assert mixes_videos(batch.samples)
    ks = [s.frames.shape[0] for s in batch.samples]
    assert sorted(ks) == [8, 12]
    assert len({s.frames.shape[1:3] for s in batch.samples}) == 2
    grids = batch.prompts["video_grid_thw"].tolist()
    assert [t for t, _, _ in grids] == [k // 2 for k in ks]  # K/2 temporal groups per video
    tokens = [t * h * w // 4 for t, h, w in grids]  # after the 2x2 merge
    assert tokens[0] != tokens[1]


def test_training_on_batches_of_ragged_videos(ragged, tmp_path):
    # shuffled with seed 0, both steps hold one question of each video (K = 8 and K = 12)
    cfg = config(ragged, tmp_path / "run", data={"shuffle": True})
    assert all(mixes_videos([CacheSamples(ragged["cache"]).keys[i] for i in
                             batch_indices(4, 2, step, 0, True)]) for step in range(2))
    rows = read_metrics(trainer_mod.train(cfg, extra_rewards=[LengthReward()]))
    assert [r["samples"] for r in rows] == [2 * G, 2 * G]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["no_prior"] == 0
        assert 0 <= r["r_cov_mean"] <= r["r_cov_max"] <= 1  # every α met its own prior


def test_workers_prepare_the_same_batches_as_the_step(ragged):
    dataset = micro_batches(ragged)
    inline = list(batch_loader(dataset, num_workers=0))
    ahead = list(batch_loader(dataset, num_workers=2, prefetch_factor=2))
    assert [b.micro_batch for b in ahead] == [1, 2, 3, 4]
    for a, b in zip(inline, ahead):
        assert a.indices == b.indices
        for sa, sb in zip(a.samples, b.samples):
            np.testing.assert_array_equal(sa.frames, sb.frames)
        for key in a.prompts:
            torch.testing.assert_close(a.prompts[key], b.prompts[key], rtol=0, atol=0)


def test_a_run_with_workers_trains_exactly_as_one_without(ragged, tmp_path):
    a = trainer_mod.train(config(ragged, tmp_path / "inline"), extra_rewards=[LengthReward()])
    b = trainer_mod.train(config(ragged, tmp_path / "workers", data={"num_workers": 2}),
                          extra_rewards=[LengthReward()])
    wa = load_file(str(a / "checkpoints" / "step-000002" / "model.safetensors"))
    wb = load_file(str(b / "checkpoints" / "step-000002" / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)
    assert all(r["data_s"] >= 0 for r in read_metrics(b))


def test_a_worker_error_reaches_the_trainer_with_its_message(ragged, tmp_path):
    cfg = config(ragged, tmp_path / "run", data={"num_workers": 1,
                                                 "video_root": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="data.video_root"):
        trainer_mod.train(cfg)
