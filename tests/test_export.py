"""`videocfr cache export`: frame_sets in Video-R1 JSON that rebuild the cache's prior."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import videos as clips
from synthetic_cache import TEST_CONFIG, TEST_MODEL, make_question, make_video
from videocfr.cache_format import (
    Cache,
    CacheError,
    FusionConfig,
    ShardWriter,
    VideoRecord,
    finalize_cache,
)
from videocfr.cache_format.export import export_file
from videocfr.cache_format.re_fuse import re_fuse_cache

from videocfr.cli import main

VIDEO_IDS = ["LLaVA-Video/ytb_a", "LLaVA-Video/ytb_b", "NeXT-QA/1234"]


def reference_prior(sets: dict) -> tuple[list[int], np.ndarray]:
    """The reference trainer's arithmetic (METHOD §3 videocfr-ref), written out independently."""
    frames = sorted({int(i) for i in sets["uniform"]})
    scene, semantic = {int(i) for i in sets["scene"]}, {int(i) for i in sets["semantic"]}
    w = np.array([0.1 + 1.0 * (f in scene) + 3.0 * (f in semantic) for f in frames])
    return frames, w / (w.sum() + 1e-8)


def record(path: str, pid, **extra) -> dict:
    return {"problem_id": pid, "problem": "What happens?", "data_type": "video",
            "problem_type": "multiple choice", "options": ["A. x", "B. y"],
            "solution": "<answer>A</answer>", "path": path, **extra}


@pytest.fixture
def caches(tmp_path) -> tuple[Path, Path]:
    """(cfr cache, its videocfr-ref re-fuse) keyed like precompute keys Video-R1 records."""
    src = tmp_path / "cfr"
    with ShardWriter(src, TEST_CONFIG, embed_dim=16, model=TEST_MODEL) as w:
        for i, vid in enumerate(VIDEO_IDS):
            v = make_video(vid, k=8 + 4 * i, seed=i, num_scenes=1 + i)
            w.add(v, [make_question(v, str(j), seed=10 * i + j) for j in range(2)])
        w.add(VideoRecord.failed("broken/clip", "broken/clip.mp4", "decode failed"), [],
              skipped_questions=1)
        short = make_video("short/clip", k=8, num_frames=5, seed=9)  # frames sampled twice
        w.add(short, [make_question(short, "0", seed=99)])
    finalize_cache(src)
    re_fuse_cache(src, tmp_path / "ref", FusionConfig(preset="videocfr-ref"))
    return src, tmp_path / "ref"


def test_exported_sets_rebuild_the_ref_prior(caches, tmp_path):
    _, ref = caches
    recs = [record(f"./{vid}.mp4", j) for vid in VIDEO_IDS for j in range(2)]
    recs += [record("./LLaVA-Video/ytb_a.mp4", 99),            # question not in the cache
             record("./other/none.mp4", 0),                    # video not in the cache
             record("./broken/clip.mp4", 0),                   # failed video
             record("./short/clip.mp4", 0),                    # a frame index sampled twice
             {"problem_id": 7, "path": "./img/x.png", "data_type": "image", "problem": "?"}]
    (tmp_path / "in.json").write_text(json.dumps(recs))
    summary = export_file(ref, tmp_path / "in.json", tmp_path / "out.json")
    assert summary["exported"] == 6 and summary["matches_cache_prior"]
    assert (summary["no_prior"], summary["failed_video"], summary["images"]) == (2, 1, 1)
    assert summary["duplicate_frames"] == 1
    out = json.loads((tmp_path / "out.json").read_text())
    assert len(out) == len(recs)
    cache = Cache(ref)
    for rec_in, rec in zip(recs, out):
        if "frame_sets" not in rec:
            assert rec == rec_in  # unchanged
            continue
        vid = rec["path"][2:-4]
        frames, p = reference_prior(rec["frame_sets"])
        assert frames == cache.video(vid).frame_indices.tolist()
        np.testing.assert_allclose(p, cache.prior(vid, str(rec["problem_id"])), atol=1e-6)
        assert {k: v for k, v in rec.items() if k != "frame_sets"} == rec_in


def test_cfr_cache_exports_the_same_sets_but_says_the_prior_differs(caches, tmp_path, capsys):
    cfr, ref = caches
    recs = [record(f"{vid}.mp4", j) for vid in VIDEO_IDS for j in range(2)]
    for r in recs:  # the reference trainer indexes both; the export fills them in
        del r["data_type"], r["problem_type"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["cache", "export", str(cfr), "--video-r1", str(tmp_path / "in.jsonl"),
                 "-o", str(tmp_path / "cfr.jsonl")]) == 0
    assert "preset cfr" in capsys.readouterr().out
    export_file(ref, tmp_path / "in.jsonl", tmp_path / "ref.jsonl")
    a = [json.loads(x) for x in (tmp_path / "cfr.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "ref.jsonl").read_text().splitlines()]
    assert [r["frame_sets"] for r in a] == [r["frame_sets"] for r in b]
    assert all(r["data_type"] == "video" and r["problem_type"] == "multiple choice" for r in a)
    cache = Cache(cfr)
    vid, qid = VIDEO_IDS[0], "0"
    _, p = reference_prior(a[0]["frame_sets"])
    assert not np.allclose(p, cache.prior(vid, qid), atol=1e-3)


def test_no_matching_record_is_an_error_and_writes_nothing(caches, tmp_path, capsys):
    _, ref = caches
    (tmp_path / "in.json").write_text(json.dumps([record("./x/y.mp4", 1),
                                                  record("./z.mp4", 2)]))
    with pytest.raises(CacheError, match="matches a key"):
        export_file(ref, tmp_path / "in.json", tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
    assert main(["cache", "export", str(ref), "--video-r1", str(tmp_path / "in.json"),
                 "-o", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "['x/y', '1']" in err and "LLaVA-Video/ytb_a" in err
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("bad, match", [([1, 2], "record 0"),
                                        ([{"problem_id": 1, "problem": "?"}], "path")])
def test_malformed_records(caches, tmp_path, bad, match):
    (tmp_path / "in.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=match):
        export_file(caches[1], tmp_path / "in.json", tmp_path / "out.json")


def test_precompute_video_r1_dataset_export_round_trip(tmp_path):
    """The real path: precompute a Video-R1 JSON with preset videocfr-ref, export it back."""
    from videocfr.precompute.cli import main as precompute

    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    clips.colour_segments(root / "clips", [20, 45], 60, name="a.mp4")
    clips.colour_segments(root / "clips", [30], 50, name="b.mp4")
    recs = [record("./clips/a.mp4", 1), record("./clips/a.mp4", 2, problem="How many cuts?"),
            record("./clips/b.mp4", 3), record("./clips/missing.mp4", 4),
            {"problem_id": 5, "problem": "?", "data_type": "image", "path": "./i.png",
             "solution": "<answer>A</answer>"}]
    (root / "train.json").write_text(json.dumps(recs))
    (tmp_path / "ds.yaml").write_text("annotation: data/train.json\nvideo_root: data\n"
                                      "format: video-r1\n")
    (tmp_path / "cfg.yaml").write_text(
        "sampling: {num_frames: 8, short_side: 64}\nclip: {model: videocfr-tiny, pretrained: none}"
        "\nfusion: {preset: videocfr-ref}\ndecode: {timeout_s: 120}\n")
    assert precompute(["--config", str(tmp_path / "cfg.yaml"), "--dataset",
                       str(tmp_path / "ds.yaml"), "--out", str(tmp_path / "cache")]) == 0
    summary = export_file(tmp_path / "cache", root / "train.json", tmp_path / "out.json")
    assert (summary["exported"], summary["failed_video"], summary["images"]) == (3, 1, 1)
    cache = Cache(tmp_path / "cache")
    for rec in json.loads((tmp_path / "out.json").read_text())[:3]:
        vid = "clips/" + rec["path"].split("/")[-1][:-4]
        _, p = reference_prior(rec["frame_sets"])
        np.testing.assert_allclose(p, cache.prior(vid, str(rec["problem_id"])), atol=1e-6)
