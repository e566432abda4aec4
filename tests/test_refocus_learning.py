"""`pytest -k learn`: ReFoCUS learns where to look from a frozen world VLM's margin alone, and
its content-free control does not — benchmarks/refocus_world.py at the smallest size that still
shows it (issue: both methods proven in the world, item 1 at CI size).

What is built here, from nothing, in about 5 minutes on two cores:
- the world CLIP at CI size (the session's `ci_clip`: 1,000 steps) and a world VLM at CI size
  (`ci_vlm_config`: a shorter vision stage, no distractor stage). Measured (probe of this config,
  seed 0, 207 s on one thread): it reads colour (per token 0.98) but hardly shape (0.35), and
  with one object among four frames answers 0.37 against 0.20 without it (128 held-out
  questions each);
- frame-needle haystacks (calm and cuts) whose questions all ask the needle's colour, so the
  frozen VLM's margin depends on whether the needle frame is among the chosen ones. Training:
  L 12, 20, 28 s at depths 0.1 .. 0.9; test: L 16, 24 s at LongVA's depths 0 .. 1 step 0.2,
  another build seed. Held out: the lengths, the depths and the haystacks;
- the selector trained with the margin reward r = tanh(m / 2) only (100 steps x 4 questions x 8
  subsets at n = 4), and the control: the same training reading another haystack's frame
  embeddings.

Measured with this VLM and CLIP (benchmark seeds 0, 1, 2; 24 test questions, n = 4, exact
chance hit rate 0.208, answer chance 0.25): learned QA 0.792 / 0.875 / 0.833 and hit 1.000 /
0.958 / 0.958; uniform 0.292 and 0.167; control QA 0.167 / 0.417 / 0.250 and hit 0.083 / 0.167
/ 0.000; the untrained policy (which already reads the frame-question cosine) 0.583 / 0.375 /
0.250 and 0.708 / 0.167 / 0.292. At 24 questions QA has a standard error of about 0.1, so the
control's QA is checked only for not gaining on uniform, and its hit rate for staying near
chance. The full-size run (80 training and 72 test haystacks, both needle kinds, the `make
world` models) is docs/refocus.md's table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("open_clip")
pytest.importorskip("skvideo")

REPO = Path(__file__).resolve().parents[1]


def ci_vlm_config():
    from videocfr.train.world_vlm import LetterStage, Stage, VisionStage, VlmTrainConfig

    return VlmTrainConfig(
        vision=VisionStage(crop_steps=500, crop_batch=32, frame_steps=300, frame_batch=8),
        stages=(Stage(200, (2,), match=False), LetterStage(1200, until=0.9), Stage(300, (2,))),
        eval_per_n=16, eval_frames=(4,), seed=0)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_refocus_learns_from_the_world_vlm_margin_and_its_content_free_control_does_not(
        ci_clip, refocus_world, tmp_path):
    from videocfr.train.world_vlm import train_vlm

    vlm = tmp_path / "vlm"
    train_vlm(ci_vlm_config(), vlm)
    config = yaml.safe_load((REPO / "configs" / "precompute" / "world.yaml").read_text())
    config["clip"]["pretrained"] = str(ci_clip[0])
    (tmp_path / "world_ci.yaml").write_text(yaml.safe_dump(config))
    summary = refocus_world.run(refocus_world.parse_args([
        "--root", str(tmp_path / "runs"), "--config", str(tmp_path / "world_ci.yaml"),
        "--vlm", str(vlm), "--needles", "frame", "--asked", "colour",
        "--train-lengths", "12,20,28", "--test-lengths", "16,24", "--steps", "100",
        "--budgets", "4", "--threads", "2", "--seed", "0"]))
    qa = {k.split("|")[0]: v for k, v in summary["qa"].items()}
    hit = {k.split("|")[0]: v for k, v in summary["hit"].items()}
    chance = summary["chance"][4]
    assert summary["test_questions"] == 24 and chance == pytest.approx(0.2083, abs=1e-3)
    report = f"QA {qa}, hit {hit}, chance {chance:.3f}"
    # the margin taught the selector where the answer is, on unseen lengths and depths
    assert qa["learned"] >= qa["uniform"] + 0.2, report  # measured +0.50 .. +0.58
    assert hit["learned"] >= 2 * chance, report  # measured 4.6x .. 4.8x
    assert qa["learned"] >= qa["control"] + 0.2, report  # measured +0.46 .. +0.63
    # ... beyond what the starting policy reads from the frame-question cosine
    assert hit["learned"] > hit["untrained"], report  # measured +0.29, +0.79, +0.67
    # the same training without content found nothing
    assert hit["control"] <= 1.5 * chance, report  # measured 0.0x .. 0.8x
    assert qa["control"] <= qa["uniform"] + 0.15, report  # measured -0.125 .. +0.125
