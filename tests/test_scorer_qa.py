"""The frozen VLM scorer (tiny random Qwen2.5-VL) and `videocfr evaluate qa`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import videos as clips
from synthetic_cache import make_cache
from videocfr.evaluate.qa import bootstrap_ci, main, read_eval
from videocfr.vlm.scorer import FrozenScorer, ScoreItem


def _items(n_frames=(3, 4, 8)):
    rng = np.random.default_rng(0)
    return [ScoreItem(rng.integers(0, 255, (n, 32, 48, 3), dtype=np.uint8), f"What is it {i}?",
                      ["A. a cat", "B. a dog", "C. a car"], "B") for i, n in enumerate(n_frames)]


def test_scorer_margin_is_correct_minus_best_other(tiny_scorer):
    items = _items()
    logits = tiny_scorer.option_logits(items)
    margins = tiny_scorer.margins(items)
    for z, m in zip(logits, margins):
        assert z.shape == (3,) and m == pytest.approx(z[1] - max(z[0], z[2]), abs=1e-6)
    one_by_one = np.array([tiny_scorer.margins([it])[0] for it in items])
    np.testing.assert_allclose(one_by_one, margins, atol=1e-5)  # batching changes nothing
    assert items[0].padded and not items[1].padded


def test_scorer_bad_input(tiny_scorer, tmp_path):
    item = _items((2,))[0]
    with pytest.raises(ValueError, match="not one of the option letters"):
        tiny_scorer.margins([ScoreItem(item.frames, "q", ["A. x", "B. y"], "E")])
    with pytest.raises(ValueError, match="uint8"):
        tiny_scorer.option_logits([ScoreItem(item.frames.astype(np.float32), "q", ["A. x"], "A")])
    with pytest.raises(ValueError, match="no config.json"):
        FrozenScorer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"'llama'.*not a registered model family"):
        FrozenScorer.from_pretrained(tmp_path)


def test_scorer_generate_is_scored_by_the_trainer_rewards(tiny_scorer):
    texts, acc = tiny_scorer.generate_scores(_items((2,)), max_new_tokens=4)
    assert len(texts) == 1 and acc.tolist() == [0.0]  # random weights: no <answer>


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    v = np.array([1, 0, 1, 1, 0, 1, 0, 1], float)
    lo, hi = bootstrap_ci(v, seed=3)
    assert (lo, hi) == bootstrap_ci(v, seed=3) and lo <= v.mean() <= hi and lo < hi


def test_qa_reads_video_r1_eval_files(tmp_path):
    recs = [{"problem_id": 7, "problem": "Q?", "options": ["A. a", "B. b"],
             "solution": "<answer>B</answer>", "problem_type": "multiple choice",
             "data_type": "video", "path": "./MVBench/clip_1.mp4"},
            {"problem_id": 8, "problem": "Q?", "solution": "<answer>x</answer>",
             "data_type": "image", "path": "img.jpg"}]
    (tmp_path / "eval.json").write_text(json.dumps(recs))
    records, skipped = read_eval(tmp_path / "eval.json")
    assert [(r.video_id, r.question_id, r.answer) for r in records] == [
        ("MVBench/clip_1", "7", "B")]
    assert len(skipped["image_record"]) == 1


def test_qa_end_to_end_resumable(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        clips.colour_segments(videos, [100], 250, size=(64, 48), name=f"vid{i:03d}.mp4")
    make_cache(tmp_path / "c", n_videos=2, n_questions=1, k=8, n_failed=1)
    recs = [{"video_id": "vid000", "question_id": "q0", "answer": "B"},
            {"video_id": "vid001", "question_id": "q0", "answer": "B"},
            {"video_id": "bad000", "question_id": "q0", "answer": "B"},
            {"video_id": "vid000", "question_id": "q9", "answer": "B"}]
    (tmp_path / "eval.json").write_text(json.dumps(recs))
    argv = ["--data", str(tmp_path / "eval.json"), "--cache", str(tmp_path / "c"), "--model",
            "tiny", "--strategies", "uniform,random", "--budgets", "2,4,16", "--video-root",
            str(tmp_path), "-o", str(tmp_path / "out")]
    assert main(argv) == 0
    samples = (tmp_path / "out/samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 * 2 * 2  # 2 questions x 2 strategies x budgets 2, 4 (16 > K = 8)
    first = json.loads((tmp_path / "out/summary.json").read_text())
    assert first["problems"] == {"failed_video": 1, "missing_from_cache": 1, "budget_over_k": 4}
    assert first["accuracy"]["uniform|4|overall"]["count"] == 2
    # a kill cut the last line: the rerun redoes that sample only, with the same result
    (tmp_path / "out/samples.jsonl").write_text("\n".join(samples[:-1]) + "\n" + samples[-1][:9])
    assert main(argv) == 0
    again = (tmp_path / "out/samples.jsonl").read_text().splitlines()
    assert json.loads(again[-1]) == json.loads(samples[-1])
    second = json.loads((tmp_path / "out/summary.json").read_text())
    assert second["accuracy"] == first["accuracy"]
    focus_argv = argv[:6] + ["--strategies", "uniform", "--budgets", "4", "--video-root",
                             str(tmp_path), "--focus", "-o", str(tmp_path / "focus")]
    assert main(focus_argv) == 0
    overall = json.loads((tmp_path / "focus/summary.json").read_text())["accuracy"]
    assert {"alpha_entropy", "r_cov"} <= set(overall["uniform|4|overall"])
    capsys.readouterr()


def test_qa_finds_the_videos_where_the_cache_recorded_them(tmp_path, capsys):
    from videocfr.cache_format import Cache
    from videocfr.evaluate.frames import load_frames, video_root

    videos = tmp_path / "videos"
    videos.mkdir()
    clips.colour_segments(videos, [100], 250, size=(64, 48), name="vid000.mp4")
    make_cache(tmp_path / "c", n_videos=1, n_questions=1, k=8, n_failed=0,
               video_root=str(tmp_path))
    assert Cache(tmp_path / "c").manifest["video_root"] == str(tmp_path)
    (tmp_path / "eval.json").write_text(json.dumps(
        [{"video_id": "vid000", "question_id": "q0", "answer": "B"}]))
    argv = ["--data", str(tmp_path / "eval.json"), "--cache", str(tmp_path / "c"), "--model",
            "tiny", "--strategies", "uniform", "--budgets", "2", "-o", str(tmp_path / "out")]
    assert main(argv) == 0  # no --video-root: the cache's record is enough
    assert len((tmp_path / "out/samples.jsonl").read_text().splitlines()) == 1
    # the flag still wins, and a missing video names the flag of this command
    assert main(argv[:-1] + [str(tmp_path / "o2"), "--video-root", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--video-root" in err and "data.video_root" not in err and "vid000.mp4" in err
    cache = Cache(tmp_path / "c")
    assert video_root(cache) == tmp_path
    with pytest.raises(FileNotFoundError, match="pass BUILD_DIR"):
        load_frames(tmp_path / "nope", cache.video("vid000"), np.array([0]), flag="BUILD_DIR")


def test_cache_plot_writes_a_png(tmp_path):
    from videocfr.cli import main

    videos = tmp_path / "videos"
    videos.mkdir()
    clips.colour_segments(videos, [100], 250, size=(64, 48), name="vid000.mp4")
    make_cache(tmp_path / "c", n_videos=1, n_questions=1, k=8, n_failed=1)
    out = tmp_path / "p.png"
    assert main(["cache", "plot", str(tmp_path / "c"), "vid000", "--video-root", str(tmp_path),
                 "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert main(["cache", "plot", str(tmp_path / "c"), "bad000", "-o", str(out)]) == 2


def test_qa_focus_reports_alpha_entropy_and_r_cov(tiny_scorer, tmp_path):
    from videocfr.evaluate.focus import focus, shown_prior

    item = _items((5,))[0]
    prior = np.array([0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05])
    pos = np.array([0, 2, 3, 5, 7])
    p = shown_prior(prior, pos, item.padded)
    assert p.tolist() == pytest.approx([0.4 / 0.75, 0.1 / 0.75, 0.1 / 0.75, 0.1 / 0.75,
                                        0.05 / 0.75, 0.0])
    got = focus(tiny_scorer, item, prior, pos, max_new_tokens=4)
    assert got["groups"] == 3 and 0 <= got["alpha_entropy"] <= np.log(3) + 1e-6
    assert 0 <= got["r_cov"] <= 1
