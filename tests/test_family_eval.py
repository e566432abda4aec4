"""`evaluate qa --model tiny:<family>` (logits and generate) and `precompute margins` for the
families beside Qwen2.5-VL (whose runs are test_scorer_qa.py's and test_selector_train.py's), and
the chosen frames' true seconds reaching each family's prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import videos as clips
from synthetic_cache import make_cache
from videocfr.evaluate.qa import main as qa_main
from videocfr.vlm.scorer import FrozenScorer, ScoreItem

FAMILIES = ["qwen3_vl", "qwen3_5"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_eval")
    (root / "videos").mkdir()
    for i in range(2):
        clips.colour_segments(root / "videos", [100], 250, size=(64, 48), name=f"vid{i:03d}.mp4")
    make_cache(root / "c", n_videos=2, n_questions=1, k=8, n_failed=0)
    recs = [{"video_id": f"vid{i:03d}", "question_id": "q0", "answer": "B"} for i in range(2)]
    (root / "eval.json").write_text(json.dumps(recs))
    return root


@pytest.mark.parametrize("mode", ["logits", "generate"])
@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_qa(world, family, mode, capsys):
    out = world / f"out-{family}-{mode}"
    argv = ["--data", str(world / "eval.json"), "--cache", str(world / "c"), "--model",
            f"tiny:{family}", "--strategies", "uniform", "--budgets", "4", "--mode", mode,
            "--max-new-tokens", "4", "--video-root", str(world), "-o", str(out)]
    assert qa_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"]["uniform|4|overall"]["count"] == 2
    capsys.readouterr()


@pytest.mark.parametrize("family", FAMILIES)
def test_precompute_margins(world, family, capsys):
    from videocfr.selector.margins import load_margins

    from videocfr.cli import main

    assert main(["precompute", "margins", "--cache", str(world / "c"), "--tiny-scorer",
                 "--tiny-family", family, "--video-root", str(world), "--num-subsets", "2",
                 "--subset-size", "2"]) == 0
    margins = load_margins(world / "c")
    assert len(margins) == 2
    assert all(m.shape == (2,) and np.all(np.isfinite(m)) for m in margins.values())
    capsys.readouterr()


@pytest.mark.parametrize("family", ["qwen2_5_vl", *FAMILIES])
def test_selection_times_reach_the_prompt(family):
    """A non-uniform selection: per-group families print each group's true seconds; Qwen2.5-VL
    gets one fps for the clip: its seconds per group are 2 x the median gap (2.0 s here)."""
    scorer = FrozenScorer.tiny(family=family)
    seconds = np.array([0.5, 1.0, 7.0, 9.0])
    item = ScoreItem(np.zeros((4, 64, 64, 3), np.uint8), "q", ["A. x", "B. y"], "A",
                     timestamps=seconds)
    batch = scorer.batch_inputs([item], ["q"])
    text = scorer.processor.tokenizer.decode(batch["input_ids"][0])
    if scorer.family.takes_timestamps:
        assert "<0.8 seconds>" in text and "<8.0 seconds>" in text
    else:
        assert "seconds>" not in text
        assert batch["second_per_grid_ts"].tolist() == pytest.approx([2 * 2.0])
