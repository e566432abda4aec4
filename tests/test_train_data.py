"""Trainer data: cached frames decoded at their stored indices, prompts, K checks, configs.

`make_train_cache` (imported by test_trainer.py and test_zero3.py) writes a small finished cache
with cache_format's ShardWriter (synthetic records, tests/synthetic_cache.py) plus the real video
files its records point at, made with ffmpeg (tests/videos.py). Precompute is never run here.
"""

from __future__ import annotations

from pathlib import Path

import decord
import numpy as np
import pytest
from synthetic_cache import make_cache
from videocfr.train.config import TrainConfig, load_config, parse_override
from videocfr.train.data import (
    CacheSamples,
    Sample,
    batch_indices,
    process,
)
from videocfr.vlm.prompts import build_prompt, problem_type_of
from videocfr.vlm.video import read_frames
from videos import segment_frames, write_clip

NUM_FILE_FRAMES = 250  # synthetic_cache's videos: 10 s at 25 fps


def make_train_cache(root: Path, n_videos: int = 2, n_questions: int = 2, k: int = 8,
                     prior_questions: int | None = None) -> dict[str, Path]:
    """A cache of `n_videos` real clips; optionally a second cache holding only the first
    `prior_questions` questions of each video (to train with missing priors).

    Returns:
        {"cache": cache dir, "videos": video root, "priors": second cache dir (if made)}.
    """
    root = Path(root)
    make_cache(root / "cache", n_videos=n_videos, n_questions=n_questions, k=k, n_failed=0)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for i in range(n_videos):
        frames = segment_frames([60 + 40 * i, 180], NUM_FILE_FRAMES, (96, 64), seed=i)
        write_clip(root / "videos" / f"vid{i:03d}.mp4", frames)
    out = {"cache": root / "cache", "videos": root}
    if prior_questions is not None:
        make_cache(root / "priors", n_videos=n_videos, n_questions=prior_questions, k=k,
                   n_failed=0)
        out["priors"] = root / "priors"
    return out


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory) -> dict[str, Path]:
    return make_train_cache(tmp_path_factory.mktemp("train_cache"))


@pytest.fixture(scope="module")
def processor():
    from videocfr.vlm.tiny import tiny_processor

    return tiny_processor()


# --- frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sequential", "seek", "auto"])
def test_frames_match_a_direct_decord_read(train_cache, method):
    samples = CacheSamples(train_cache["cache"], video_root=str(train_cache["videos"]),
                           decode=method)
    assert len(samples) == 4
    for i in range(len(samples)):
        s = samples[i]
        video = samples.cache.video(s.video_id)
        np.testing.assert_array_equal(s.frame_indices, video.frame_indices)
        vr = decord.VideoReader(str(train_cache["videos"] / video.path))
        direct = vr.get_batch(video.frame_indices.tolist()).asnumpy()
        assert s.frames.shape == (8, 64, 96, 3) and s.frames.dtype == np.uint8
        np.testing.assert_array_equal(s.frames, direct)


def test_sequential_read_handles_dense_and_repeated_indices(train_cache):
    path = train_cache["videos"] / "videos" / "vid001.mp4"
    idx = np.array([3, 4, 4, 5, 9, 200, 249])
    direct = decord.VideoReader(str(path)).get_batch(idx.tolist()).asnumpy()
    np.testing.assert_array_equal(read_frames(path, idx, "sequential"), direct)


def test_indices_past_the_end_of_the_file_are_an_error(train_cache):
    with pytest.raises(ValueError, match="has 250 frames"):
        read_frames(train_cache["videos"] / "videos" / "vid000.mp4", np.array([0, 250]))
    with pytest.raises(FileNotFoundError, match="data.video_root"):
        read_frames(train_cache["videos"] / "videos" / "nope.mp4", np.array([0, 2]))


def test_missing_cache_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make precompute DATASET=demo"):
        CacheSamples(tmp_path / "caches" / "demo")


# --- processor: t = K/2 ----------------------------------------------------------------------


def _sample(k: int) -> Sample:
    rng = np.random.default_rng(k)
    return Sample("v", "q", build_prompt("What?", ["A. x", "B. y"], "multiple choice"), "A",
                  "multiple choice", rng.integers(0, 255, (k, 56, 84, 3), dtype=np.uint8),
                  np.arange(k) * 3, 25.0, 300)


def test_processor_gives_k_over_2_groups(processor):
    batch = process(processor, [_sample(8), _sample(4)])
    assert batch["video_grid_thw"][:, 0].tolist() == [4, 2]
    assert batch["input_ids"].shape[0] == 2


def test_odd_k_is_an_error(processor):
    with pytest.raises(ValueError, match="K must be even"):
        process(processor, [_sample(7)])


def test_wrong_temporal_patch_is_an_error():
    from videocfr.vlm.tiny import tiny_processor

    proc = tiny_processor()
    proc.video_processor.temporal_patch_size = 1  # one frame per group: t = K, not K/2
    with pytest.raises(ValueError, match="expected K/2"):
        process(proc, [_sample(8)])


# --- prompts ---------------------------------------------------------------------------------


def test_prompts_follow_video_r1():
    mc = build_prompt("Who runs?", ["A. a cat", "B. a dog"], "multiple choice")
    assert "Options:\nA. a cat\nB. a dog" in mc
    assert "<think> </think>" in mc and "<answer> </answer>" in mc
    assert mc.endswith("Please provide only the single option letter (e.g., A, B, C, D, etc.) "
                       "within the <answer> </answer> tags.")
    num = build_prompt("How many?", [], "numerical")
    assert "numerical value" in num and "Options" not in num
    assert "transcribe" in build_prompt("Read it.", [], "OCR")
    assert problem_type_of("", ["A. x"]) == "multiple choice"
    assert problem_type_of("", []) == "free-form"
    with pytest.raises(ValueError, match="problem_type 'essay' unknown"):
        problem_type_of("essay", [])


# --- sample order ----------------------------------------------------------------------------


def test_batch_order_is_a_function_of_step_and_rank():
    n = 10
    epoch0 = [i for step in range(5) for i in batch_indices(n, 2, step, seed=3, shuffle=True)]
    assert sorted(epoch0) == list(range(n))  # one epoch visits every sample once
    assert batch_indices(n, 2, 7, 3, True) == batch_indices(n, 2, 7, 3, True)
    r0 = batch_indices(n, 1, 0, 3, True, rank=0, world_size=2)
    r1 = batch_indices(n, 1, 0, 3, True, rank=1, world_size=2)
    assert r0 != r1
    assert batch_indices(n, 3, 0, 0, shuffle=False) == [0, 1, 2]


# --- config ----------------------------------------------------------------------------------


def test_unknown_yaml_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("grpo:\n  num_generationz: 4\n")
    with pytest.raises(ValueError, match="unknown key 'num_generationz'"):
        load_config(path)
    path.write_text("optimiser:\n  lr: 1\n")
    with pytest.raises(ValueError, match="unknown section 'optimiser'"):
        load_config(path)


def test_shipped_configs_load():
    tiny = load_config("configs/train/tiny.yaml", ["grpo.beta=0", "run.max_steps=2"])
    assert tiny.model.tiny and tiny.grpo.beta == 0 and tiny.run.max_steps == 2
    assert tiny.data.cache_dir == "caches/demo"
    real = load_config("configs/train/qwen2_5_vl_7b.yaml")
    assert real.grpo.num_generations == 8 and real.grpo.beta == 0.04
    assert real.grpo.learning_rate == 1e-6 and real.model.bf16
    assert real.run.deepspeed == "configs/deepspeed/zero3.json"
    assert real.reward.temporal and real.reward.len_control and real.reward.tau_alpha == 0.5
    assert not tiny.reward.temporal and not tiny.reward.len_control
    from videocfr.vlm.families import family_named

    for name, family in (("qwen3_vl_8b", "qwen3_vl"), ("qwen3_5", "qwen3_5")):
        cfg = load_config(f"configs/train/{name}.yaml")
        assert cfg.reward.temporal and cfg.model.bf16
        family_named(family).check_engine(cfg.rollout.vision_once, cfg.rollout.engine)
    world = load_config("configs/train/world.yaml")  # make train: the world's policy
    assert (world.data.prompt, world.reward.answer_mode, world.grpo.beta) == \
        ("letter", "final-letter", 0.0)
    assert world.model.freeze_vision and world.run.log_completions
    assert world.grpo.max_completion_length == 3  # " <word>", " ", "<letter>"
    ref = load_config("configs/train/videocfr_ref.yaml")  # VideoCFR's run script
    assert ref.reward.temporal and ref.reward.len_control and ref.reward.gate == "hard"
    assert (ref.grpo.num_generations, ref.grpo.max_completion_length, ref.grpo.top_p,
            ref.grpo.loss_type, ref.reward.tau_alpha) == (8, 768, 0.95, "sequence", 0.5)


def test_checked_questions_reject_unknown_types_and_empty_answers(tmp_path):
    # a cache written before precompute validated its records: the trainer refuses it at load,
    # naming and counting the questions, instead of failing when training reaches them
    from synthetic_cache import make_question, make_video
    from videocfr.cache_format import Cache, CacheError, ShardWriter, finalize_cache

    with ShardWriter(tmp_path / "c", {"sampling": {"num_frames": 8}}, embed_dim=16,
                     model={"name": "synthetic", "pretrained": "random"}) as w:
        v = make_video("vid000")
        qs = [make_question(v, f"q{j}", seed=j) for j in range(4)]
        qs[1].problem_type = "['multiple choice']"
        qs[2].answer = "  "
        qs[3].problem_type = "yes/no"
        w.add(v, qs)
    finalize_cache(tmp_path / "c")
    with pytest.raises(CacheError) as err:
        CacheSamples(tmp_path / "c", str(tmp_path))
    msg = str(err.value)
    assert "3 of 4 questions" in msg and "q1" in msg and "q2" in msg and "q3" in msg
    assert "q0" not in msg and "empty" in msg
    # max_samples keeps only q0: nothing to reject
    assert len(CacheSamples(tmp_path / "c", str(tmp_path), max_samples=1)) == 1
    assert Cache(tmp_path / "c").question("vid000", "q2").answer == "  "


def test_problem_types_agree_across_stages():
    from videocfr.precompute.datasets import PROBLEM_TYPES as precompute_types
    from videocfr.vlm.answers import PROBLEM_TYPES as reward_types
    from videocfr.vlm.prompts import PROBLEM_TYPES as data_types

    assert precompute_types == data_types == reward_types


def test_config_validation_says_how_to_fix():
    with pytest.raises(ValueError, match="exactly one of"):
        TrainConfig.from_dict({"model": {"tiny": True, "path": "x"}})
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        TrainConfig.from_dict({"grpo": {"num_generations": 1}})
    with pytest.raises(ValueError, match="gate 'medium' unknown"):
        TrainConfig.from_dict({"reward": {"gate": "medium"}})
    with pytest.raises(ValueError, match="section.key"):
        parse_override("beta=0")


def test_letter_prompt_is_the_frozen_scorers(train_cache, tmp_path):
    # data.prompt "letter": the world VLM is trained on the scorer's letter prompt, so the
    # trainer asks in that form; an open question has no letters and is refused up front
    from synthetic_cache import make_question, make_video
    from videocfr.cache_format import CacheError, ShardWriter, finalize_cache
    from videocfr.vlm.scorer import letter_prompt

    samples = CacheSamples(train_cache["cache"], video_root=str(train_cache["videos"]),
                           prompt="letter")
    s = samples[0]
    q = samples.cache.question(s.video_id, s.question_id)
    assert s.prompt == letter_prompt(q.question, list(q.options)) and q.options
    assert "<answer>" not in s.prompt
    assert s.prompt != CacheSamples(train_cache["cache"], str(train_cache["videos"]))[0].prompt
    with pytest.raises(ValueError, match="prompt 'essay' unknown"):
        CacheSamples(train_cache["cache"], str(train_cache["videos"]), prompt="essay")
    with ShardWriter(tmp_path / "c", {"sampling": {"num_frames": 8}}, embed_dim=16,
                     model={"name": "synthetic", "pretrained": "random"}) as w:
        v = make_video("vid000")
        qs = [make_question(v, f"q{j}", seed=j) for j in range(2)]
        qs[1].options, qs[1].problem_type, qs[1].answer = [], "free-form", "a dog"
        w.add(v, qs)
    finalize_cache(tmp_path / "c")
    with pytest.raises(CacheError, match=r"1 questions have no options .*'vid000', 'q1'"):
        CacheSamples(tmp_path / "c", str(tmp_path), prompt="letter")
    assert len(CacheSamples(tmp_path / "c", str(tmp_path))) == 2  # video-r1 prompts ask both
