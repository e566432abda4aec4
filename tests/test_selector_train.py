"""The selector trainer end to end on synthetic caches: CLI routing, curriculum, metrics,
checkpoints and --resume, the Var(m) filter, the margins addition, `refocus` and `select`."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from synthetic_cache import TEST_MODEL, make_question, make_video
from videocfr.cache_format import (
    Cache,
    CacheError,
    SchemaError,
    ShardWriter,
    VideoRecord,
    finalize_cache,
)
from videocfr.cache_format.verify import verify_cache
from videocfr.selector import margins as margins_mod
from videocfr.selector.checkpoint import load_policy
from videocfr.selector.config import load_selector_config
from videocfr.selector.trainer import train
from videocfr.train.metrics import read_metrics

DIM = 16


def _cache(path: Path, ks=(8, 8, 8, 4), failed=1) -> tuple[Path, Path]:
    """A cache of len(ks) videos (K each) with two questions each, one failed video, and an
    annotation JSONL giving each question a needle at its video's middle frames."""
    records = []
    with ShardWriter(path, {"sampling": {"num_frames": 8}}, embed_dim=DIM,
                     model=TEST_MODEL) as w:
        for i, k in enumerate(ks):
            v = make_video(f"v{i}", k=k, dim=DIM, seed=i)
            qs = [make_question(v, f"q{j}", seed=10 * i + j) for j in range(2)]
            w.add(v, qs)
            mid = int(v.frame_indices[k // 2])
            records += [{"video_id": v.video_id, "question_id": q.question_id,
                         "needle_frames": [mid, mid + 1]} for q in qs]
        for i in range(failed):
            w.add(VideoRecord.failed(f"bad{i}", f"videos/bad{i}.mp4", "decode failed"), [],
                  skipped_questions=1)
    finalize_cache(path)
    ann = path.parent / "ann.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in records))
    return path, ann


def _config(tmp_path: Path, cache: Path, ann: Path, **over) -> Path:
    cfg = {"trainer": "selector",
           "policy": {"d_model": 16, "num_layers": 1, "num_heads": 2},
           "data": {"cache_dir": str(cache), "annotation": str(ann), "min_margin_var": None},
           "reward": {"kind": "needle"},
           "grpo": {"num_samples": 4, "batch_size": 4, "budgets": [2, 4, 6],
                    "milestones": [0, 2, 4], "learning_rate": 1e-2, "weight_decay": 0.0},
           "run": {"max_steps": 6, "output_dir": str(tmp_path / "run"), "checkpoint_every": 2,
                   "keep_checkpoints": 0, "seed": 0, "device": "cpu", "tensorboard": True,
                   "threads": 1}}
    for key, value in over.items():
        section, name = key.split("__")
        cfg[section][name] = value
    path = tmp_path / "selector.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture()
def cache(tmp_path):
    return _cache(tmp_path / "cache")


def test_selector_train_cli_routes_and_follows_the_curriculum(tmp_path, cache):
    from videocfr.cli import main

    assert main(["train", "--config", str(_config(tmp_path, *cache))]) == 0
    rows = read_metrics(tmp_path / "run")
    assert rows[0]["data_questions"] == 8 and rows[0]["data_failed_videos"] == 1
    steps = {r["step"]: r for r in rows[1:]}
    assert [steps[s]["n"] for s in range(1, 7)] == [2, 2, 4, 4, 6, 6]
    # K = 4 questions cannot give n = 6: counted, never scored
    assert sum(steps[s]["skipped_k_lt_n"] for s in (5, 6)) > 0
    assert sum(steps[s]["skipped_k_lt_n"] for s in (1, 2, 3, 4)) == 0
    for key in ("reward", "hit_rate", "entropy", "loss"):
        assert steps[1][key] is not None
    assert (tmp_path / "run" / "tensorboard").is_dir()
    assert (tmp_path / "run" / "checkpoints" / "step-000006" / "state.json").is_file()


def test_selector_resume_matches_an_uninterrupted_run(tmp_path, cache):
    cfg_path = _config(tmp_path, *cache)
    full = load_selector_config(cfg_path, [f"run.output_dir={tmp_path / 'full'}"])
    train(full)
    part = load_selector_config(cfg_path, [f"run.output_dir={tmp_path / 'part'}",
                                           "run.max_steps=4"])
    train(part)
    with pytest.raises(FileExistsError, match="--resume"):
        train(part)
    resumed = load_selector_config(cfg_path, [f"run.output_dir={tmp_path / 'part'}"])
    train(resumed, resume=True)
    a, _ = load_policy(tmp_path / "full")
    b, _ = load_policy(tmp_path / "part")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=f"{name} differs after resume")
    steps = [r["step"] for r in read_metrics(tmp_path / "part")]
    assert steps == [0, 1, 2, 3, 4, 5, 6]


def test_selector_filter_needs_margins(tmp_path, cache):
    cfg = load_selector_config(_config(tmp_path, *cache), ["data.min_margin_var=0.21"])
    with pytest.raises(CacheError, match="videocfr precompute margins"):
        train(cfg)


class FakeMargins:
    """A stand-in reward for the margins job: margin = sum of positions (varies by subset) for
    questions q0, constant for q1."""

    def margins(self, samples, subsets):
        return np.array([float(np.sum(p)) if s.question.question_id == "q0" else 1.0
                         for s, p in zip(samples, subsets)], np.float32)


def test_selector_margins_job_is_shard_parallel_and_feeds_the_filter(tmp_path, cache):
    cache_dir, ann = cache
    for i in range(2):
        margins_mod.run_job(cache_dir, FakeMargins(), num_subsets=4, subset_size=6, seed=0,
                            num_shards=2, shard_index=i)
        done = margins_mod.finalize(cache_dir, 2, {"model": "fake"})
        assert (done is None) == (i == 0)
    assert verify_cache(cache_dir) == []
    found = margins_mod.load_margins(cache_dir)
    assert len(found) == 6  # 8 questions, the 2 of the K = 4 video failed (K < n = 6)
    assert all(m.shape == (4,) for m in found.values())
    cfg = load_selector_config(_config(tmp_path, cache_dir, ann),
                               ["data.min_margin_var=0.21", "grpo.budgets=[2]",
                                "grpo.milestones=[0]", "run.max_steps=1"])
    train(cfg)
    counts = read_metrics(tmp_path / "run")[0]
    assert counts["data_questions"] == 3  # the q0s of the K = 8 videos
    assert counts["data_low_margin_var"] == 3 and counts["data_no_margins"] == 2


@pytest.mark.parametrize("damage", ["extra dataset", "soft link", "float64 margins",
                                    "NaN in an ok row"])
def test_selector_margins_part_is_read_as_hostile_input(tmp_path, cache, damage):
    cache_dir, _ = cache
    path = margins_mod.run_job(cache_dir, FakeMargins(), num_subsets=3, subset_size=2, seed=0)
    with h5py.File(path, "a") as f:
        if damage == "extra dataset":
            f["extra"] = np.zeros(3)
        elif damage == "soft link":
            del f["margins"]
            f["margins"] = h5py.SoftLink("/subsets")
        elif damage == "float64 margins":
            values = f["margins"][()]
            del f["margins"]
            f["margins"] = values.astype(np.float64)
        else:
            f["margins"][0, 0] = np.nan
    with pytest.raises(SchemaError):
        margins_mod.read_part(path)


def test_selector_refocus_strategy_and_select_cli(tmp_path, cache):
    from videocfr.evaluate import strategies
    from videocfr.selector.select import load_refocus_strategy

    from videocfr.cli import main as videocfr

    cache_dir, ann = cache
    train(load_selector_config(_config(tmp_path, cache_dir, ann), ["run.max_steps=2"]))
    load_refocus_strategy(tmp_path / "run")
    c = Cache(cache_dir)
    pos = strategies.select("refocus", c.video("v0"), c.question("v0", "q0"), 3,
                            np.random.default_rng(0))
    assert pos.shape == (3,)
    load_refocus_strategy(tmp_path / "run")  # reloading replaces its own registration
    import argparse

    from videocfr.selector.select import add_refocus_argument, apply_refocus_argument

    parser = argparse.ArgumentParser()
    add_refocus_argument(parser)
    assert apply_refocus_argument(parser.parse_args([])) is None
    args = parser.parse_args(["--refocus-checkpoint", str(tmp_path / "run")])
    assert apply_refocus_argument(args) is strategies.STRATEGIES["refocus"]
    assert videocfr(["select", "--cache", str(cache_dir), "--checkpoint", str(tmp_path / "run"),
                     "--n", "6", "--addition", "refocus-n6"]) == 0
    assert verify_cache(cache_dir) == []
    with h5py.File(cache_dir / "additions" / "refocus-n6" / "selections.h5") as f:
        assert f["positions"].shape == (6, 6)  # the K = 4 video's questions skipped
        v0 = list(f["video_id"].asstr()[()]).index("v0")
        assert set(f["frame_indices"][v0]) <= set(c.video("v0").frame_indices.tolist())
    from videocfr.selector.select import load_selections

    sel = load_selections(cache_dir, "refocus-n6")
    assert len(sel) == 6 and all(v.shape == (6,) for v in sel.values())
    r1 = tmp_path / "r1.json"
    r1.write_text(json.dumps([{"problem_id": "q1", "path": "./v1.mp4", "problem": "?",
                               "solution": "<answer>B</answer>"},
                              {"problem_id": "x", "path": "img.png", "data_type": "image"}]))
    out = tmp_path / "out.json"
    assert videocfr(["select", "--cache", str(cache_dir), "--checkpoint", str(tmp_path / "run"),
                     "--n", "4", "--video-r1-json", str(r1), "-o", str(out)]) == 0
    recs = json.loads(out.read_text())
    assert len(recs[0]["refocus_frames"]) == 4 and "refocus_frames" not in recs[1]


def test_selector_checkpoint_of_another_architecture_is_refused(tmp_path, cache):
    from videocfr.selector.select import load_refocus_strategy

    cache_dir, ann = cache
    train(load_selector_config(_config(tmp_path, cache_dir, ann), ["run.max_steps=1"]))
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    state = json.loads((ckpt / "state.json").read_text())
    state["policy"]["d_model"] = 32
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="mismatched tensors"):
        load_policy(ckpt)
    state["architecture"] = "cf-grpo-qwen"
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="not a ReFoCUS selector"):
        load_refocus_strategy(ckpt)


def test_selector_margin_reward_uses_the_frozen_scorer(cache):
    from videocfr.selector.data import SelectorSample, relative_times
    from videocfr.selector.rewards import MarginReward
    from videocfr.vlm import scorer as scorer_mod

    c = Cache(cache[0])
    video = c.video("v0")
    q = c.question("v0", "q0")
    open_q = c.question("v0", "q1")
    open_q.problem_type, open_q.options = "free-form", []
    frames = np.random.default_rng(0).integers(0, 255, (video.num_sampled, 32, 32, 3), np.uint8)
    reward = MarginReward(scorer_mod.FrozenScorer.tiny(seed=0), lambda s, p: frames[p])
    samples = [SelectorSample(video, q, relative_times(video)),
               SelectorSample(video, open_q, relative_times(video))]
    r = reward(samples, [np.array([0, 3]), np.array([1, 2])])
    assert r[1] is None and reward.failures == 1
    assert -1 < r[0] < 1 and r[0] == pytest.approx(np.tanh(reward.last_margins[0] / 2))


@pytest.mark.parametrize("name", ["refocus_tiny.yaml", "refocus_qwen2_5_vl_7b.yaml"])
def test_selector_shipped_configs_load(name):
    cfg = load_selector_config(Path(__file__).parents[1] / "configs" / "train" / name)
    assert cfg.policy_config(512).embed_dim == 512
    assert cfg.grpo.budgets[0] == 4


def test_selector_config_errors_name_the_fix(tmp_path, cache):
    path = _config(tmp_path, *cache)
    with pytest.raises(ValueError, match="unknown key 'lr'"):
        load_selector_config(path, ["grpo.lr=1"])
    with pytest.raises(ValueError, match="milestones"):
        load_selector_config(path, ["grpo.milestones=[0, 5]"])
    with pytest.raises(ValueError, match="exceeds every question's K"):
        train(load_selector_config(path, ["grpo.budgets=[2, 4, 10]"]))
    with pytest.raises(ValueError, match="model_path"):
        load_selector_config(path, ["reward.kind=margin"])


def test_selector_margins_cli_dispatch(tmp_path, cache, capsys):
    from videocfr.cli import main

    assert main(["precompute", "margins", "--cache", str(cache[0]), "--tiny-scorer",
                 "--finalize", "--num-shards", "2"]) == 0
    assert "parts still missing" in capsys.readouterr().out
    assert main(["precompute", "margins", "--cache", str(cache[0]), "--tiny-scorer",
                 "--num-shards", "2", "--shard-index", "2"]) == 2
    assert "--shard-index 2" in capsys.readouterr().err


def test_selector_margin_reward_logic_with_a_stub_scorer(cache):
    """tanh(m/2) per row, scorer batches of batch_size, None (counted) for rows it cannot score."""
    from dataclasses import dataclass

    from videocfr.selector.data import SelectorSample, relative_times
    from videocfr.selector.rewards import MarginReward

    @dataclass
    class Item:
        frames: np.ndarray
        question: str
        options: list
        answer: str
        problem_type: str = "multiple choice"
        timestamps: np.ndarray | None = None

    class Scorer:
        calls = []

        def margins(self, items):
            self.calls.append(len(items))
            return np.array([float(it.frames.mean()) for it in items], np.float32)

    c = Cache(cache[0])
    video = c.video("v1")
    q, bad, open_q = (c.question("v1", "q0"), c.question("v1", "q0"), c.question("v1", "q1"))
    open_q.problem_type, open_q.options = "free-form", []
    bad_video = VideoRecord(**{**video.__dict__, "video_id": "broken"})

    def frames(sample, pos):
        if sample.video.video_id == "broken":
            raise RuntimeError("decord cannot open broken.mp4")
        return np.asarray(pos, np.uint8).reshape(-1, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)

    scorer = Scorer()
    reward = MarginReward(scorer, frames, batch_size=2, item_type=Item)
    rows = [SelectorSample(video, q, relative_times(video)) for _ in range(3)] + [
        SelectorSample(video, open_q, relative_times(video)),
        SelectorSample(bad_video, bad, relative_times(video))]
    subsets = [np.array([0, 1]), np.array([1, 2]), np.array([0, 0 + 2]), np.array([1, 3]),
               np.array([2, 3])]
    r = reward(rows, subsets)
    assert r[3] is None and r[4] is None and reward.failures == 2
    want = [np.tanh(float(s.mean()) / 2) for s in subsets[:3]]  # 0.245, 0.635, 0.462
    assert r[:3] == pytest.approx(want)
    assert scorer.calls == [2, 1]
    assert np.isnan(reward.last_margins[3:]).all()
