"""V-NIAH: haystacks hold the needle where the ground truth says, hit rates are computed as by
hand, and the whole build -> precompute -> score -> heatmaps path runs with the tiny CLIP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import videos as clips
from synthetic_cache import make_cache
from videocfr.cache_format import Cache
from videocfr.evaluate.vniah.build import COLOURS, BuildConfig, Needle, build, has_cut
from videocfr.evaluate.vniah.run import figure_line, needle_positions, score, summarise

REPO = Path(__file__).resolve().parents[1]
TINY_SELECTION = """\
sampling: {fps: 1, max_frames: 512, short_side: 32}
clip: {model: videocfr-tiny, pretrained: none}
decode: {timeout_s: 120}
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    calm = clips.needle_clip(d, num_frames=60, needle=(0, 0), size=(64, 36), name="calm.mp4")
    cut = clips.colour_segments(d, [20, 40], 60, size=(64, 36), name="cuts.mp4")
    return [calm, cut]


def _read(path: Path) -> np.ndarray:
    cap, frames = cv2.VideoCapture(str(path)), []
    ok, frame = cap.read()
    while ok:
        frames.append(frame[:, :, ::-1])
        ok, frame = cap.read()
    return np.stack(frames)


def test_vniah_build_holds_the_needle_at_its_span(tmp_path, sources):
    cfg = BuildConfig(lengths=(10,), depths=(0.5,), haystacks=("calm", "cuts"),
                      needles=("clip", "overlay"), fps=8, size=(64, 36), needle_s=1.0)
    needles = build(tmp_path, cfg, sources[:1])  # a grey-blue source: no needle colour in it
    assert len(needles) == 4
    records = json.loads((tmp_path / "annotations.json").read_text())
    for needle, rec in zip(needles, records):
        assert needle.start_s == pytest.approx(4.5) and needle.end_s - needle.start_s == 1
        frames = _read(tmp_path / rec["video"])
        assert len(frames) == 80
        first, last = int(needle.start_s * 8), int(needle.end_s * 8)
        colour = np.array(COLOURS[needle.colour], float)
        centre_dist = np.abs(frames.astype(float) - colour).sum(-1).min(axis=(1, 2))
        inside, outside = centre_dist[first:last], np.delete(centre_dist, range(first, last))
        assert inside.max() < 90 < outside.min()  # the needle's colour only inside its span
        assert rec["answer"] == "ABCD"[[o.split(". ")[1] for o in rec["options"]]
                                       .index(needle.colour)]
    assert not has_cut(_read(sources[0])) and has_cut(_read(sources[1]))


def test_vniah_hit_rates_match_a_hand_count(tmp_path):
    make_cache(tmp_path / "c", n_videos=2, n_questions=1, k=8, n_failed=1)
    cache = Cache(tmp_path / "c")
    v = cache.video("vid000")  # 8 candidates at frames linspace(0, 249, 8) / 25 fps
    t = v.timestamps
    needle = Needle("vid000", "calm", "clip", 10.0, 0.5, float(t[3]), float(t[4]), "red", "A")
    assert needle_positions(t, needle).tolist() == [3]
    rows, problems = score(_renamed(tmp_path / "c"), [
        needle, Needle("bad000", "calm", "clip", 10.0, 0.0, 0.0, 1.0, "red", "A"),
        Needle("nope", "calm", "clip", 10.0, 0.0, 0.0, 1.0, "red", "A")],
        ["uniform", "prior-topn"], [2, 4, 9])
    got = {(r.strategy, r.n): r.hit for r in rows}
    assert got[("uniform", 2)] is False  # positions [2, 6]
    assert got[("uniform", 4)] is True  # positions [1, 3, 5, 7]
    q = _renamed(tmp_path / "c").question("vid000", "needle")
    assert got[("prior-topn", 2)] == bool(3 in np.argsort(-q.prior, kind="stable")[:2])
    assert rows[0].prior_mass == pytest.approx(float(q.prior[3]))
    assert len(problems["failed_video"]) == 1 and "bad000" in problems["failed_video"][0]
    assert len(problems["missing_question"]) == 1 and "nope" in problems["missing_question"][0]
    assert len(problems["budget_over_k"]) == 2  # n = 9 > K = 8, for each strategy
    summary = summarise(rows, problems, ["uniform", "prior-topn"], [2, 4])
    assert summary["hit_rate"]["uniform|4|calm|clip"] == 1.0
    assert summary["problems"] == {"failed_video": 1, "missing_question": 1, "budget_over_k": 2}


def _renamed(cache_dir: Path) -> Cache:
    """The synthetic cache's question q0 is the haystack question `needle` of V-NIAH."""
    class Renamed(Cache):
        def question(self, video_id, question_id):
            return super().question(video_id, "q0" if question_id == "needle" else question_id)
    return Renamed(cache_dir)


def test_vniah_end_to_end_tiny(tmp_path, sources):
    build(tmp_path / "b", BuildConfig(lengths=(12,), depths=(0.0, 1.0), haystacks=("cuts",),
                                      needles=("clip",), fps=8, size=(64, 36), needle_s=2.0),
          sources)
    cfg = tmp_path / "tiny_selection.yaml"
    cfg.write_text(TINY_SELECTION)
    out = subprocess.run([sys.executable, "-m", "videocfr", "evaluate", "vniah", "run",
                          str(tmp_path / "b"), "--config", str(cfg), "--budgets", "2,8",
                          "--heatmap-n", "2", "--model", "tiny"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("vniah n=8 uniform=") and "prior_novelty=" in last
    summary = json.loads((tmp_path / "b/results/summary.json").read_text())
    assert summary["haystacks"] == 2 and summary["problems"] == {}
    assert Cache(tmp_path / "b/results/cache").video(
        "cuts-clip-L0012-d000").num_sampled == 12  # fps 1 over 12 s
    rows = [json.loads(x) for x in (tmp_path / "b/results/results.jsonl").read_text().splitlines()]
    # n = 8 of K = 12 evenly: a 2 s needle always holds one of them
    assert all(r["hit"] for r in rows if r["strategy"] == "uniform" and r["n"] == 8)
    pngs = sorted((tmp_path / "b/results/heatmaps").glob("*.png"))
    assert len(pngs) == 18 and all(p.stat().st_size > 1000 for p in pngs)  # hit rate + accuracy
    assert all(r["correct"] in (0.0, 1.0) for r in rows)  # the tiny model answered each
    assert set(summary["accuracy"]) and all(0 <= v <= 1 for v in summary["accuracy"].values())
    assert figure_line(summary) == last


def test_vniah_bad_input_is_named(tmp_path):
    out = subprocess.run([sys.executable, "-m", "videocfr", "evaluate", "vniah", "run",
                          str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "needles.json" in out.stderr and "vniah build" in out.stderr
    with pytest.raises(ValueError, match="needle_s"):
        BuildConfig(needle_s=0.5)


@pytest.mark.slow
def test_candidates_k_512_end_to_end(tmp_path):
    """fps 1 with max_frames 512 over a 9-minute video: K = 512 through precompute, cache and
    every strategy."""
    frames = np.repeat(clips.segment_frames([300, 700], 1100, size=(32, 32)), 1, axis=0)
    clips.write_clip(tmp_path / "long.mp4", frames, fps=2.0)
    (tmp_path / "ann.json").write_text(json.dumps([{
        "video_id": "long", "video": "long.mp4", "question_id": "q", "question": "Which colour?",
        "options": ["A. red", "B. green"], "answer": "A"}]))
    (tmp_path / "ds.yaml").write_text("annotation: ann.json\nformat: native\nvideo_root: .\n")
    (tmp_path / "cfg.yaml").write_text(TINY_SELECTION)
    out = subprocess.run([sys.executable, "-m", "videocfr", "precompute", "--config",
                          str(tmp_path / "cfg.yaml"), "--dataset", str(tmp_path / "ds.yaml"),
                          "--out", str(tmp_path / "c")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    from videocfr.cache_format import verify_cache
    from videocfr.evaluate.strategies import STRATEGIES, select
    assert verify_cache(tmp_path / "c") == []
    cache = Cache(tmp_path / "c")
    v, q = cache.video("long"), cache.question("long", "q")
    assert v.num_sampled == 512 and q.prior.shape == (512,)
    for name in [*STRATEGIES, "prior-topn@cfr-novelty"]:
        assert len(set(select(name, v, q, 32, np.random.default_rng(0)).tolist())) == 32
