"""`videocfr cache index|search`: faiss index as a cache addition, checked against numpy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import videos as clips
from synthetic_cache import make_cache
from videocfr.cache_format import Cache, CacheError, verify_cache
from videocfr.cache_format.additions import ADDITION_MANIFEST
from videocfr.cache_format.search import ADDITION, FrameIndex, build_index

from videocfr.cli import main

pytest.importorskip("faiss")


def all_frames(cache: Cache) -> tuple[np.ndarray, list[tuple[str, int, float]]]:
    """Brute force: every ok frame's embedding (float32) and (video id, frame index, time)."""
    embs, ids = [], []
    for vid in cache.video_ids():
        v = cache.video(vid)
        if v.ok and vid == v.video_id:
            embs.append(v.embeddings.astype(np.float32))
            ids += [(vid, int(i), float(t)) for i, t in zip(v.frame_indices, v.timestamps)]
    return np.concatenate(embs), ids


def brute(x: np.ndarray, q: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    q = q / np.linalg.norm(q)
    s = x @ q.astype(np.float32)
    order = np.argsort(-s, kind="stable")[:top]
    return order, s[order]


def test_flat_index_top1_equals_brute_force(tmp_path):
    make_cache(tmp_path / "c", n_videos=6, n_questions=1, k=8, max_videos=4)
    meta = build_index(tmp_path / "c")
    assert meta["kind"] == "flat" and meta["frames"] == 48
    assert verify_cache(tmp_path / "c") == []
    cache = Cache(tmp_path / "c")
    x, ids = all_frames(cache)
    index = FrameIndex.load(cache)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((10, 16)).astype(np.float32)
    for q, hits in zip(queries, index.search(queries, top=5)):
        order, scores = brute(x, q, 5)
        assert (hits[0].video_id, hits[0].frame_index, hits[0].time) == ids[order[0]]
        assert [(h.video_id, h.frame_index) for h in hits] == [ids[i][:2] for i in order]
        np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)


def test_ivfpq_index_above_the_threshold(tmp_path):
    make_cache(tmp_path / "c", n_videos=40, n_questions=1, k=64, n_failed=0, max_videos=16)
    meta = build_index(tmp_path / "c", flat_max=500)
    assert meta["kind"] == "ivfpq" and meta["frames"] == 2560 and meta["nlist"] > 1
    cache = Cache(tmp_path / "c")
    x, ids = all_frames(cache)
    index = FrameIndex.load(cache)
    rng = np.random.default_rng(1)
    picks = rng.choice(x.shape[0], 15, replace=False)
    queries = x[picks] + 0.05 * rng.standard_normal((15, 16)).astype(np.float32)
    for q, hits in zip(queries, index.search(queries, top=5, nprobe=meta["nlist"])):
        order, scores = brute(x, q, 1)
        assert (hits[0].video_id, hits[0].frame_index) == ids[order[0]][:2]
        assert hits[0].score == pytest.approx(scores[0], abs=1e-5)  # exact re-scoring


def test_index_of_another_cache_or_model_is_refused(tmp_path):
    make_cache(tmp_path / "a", n_videos=3)
    make_cache(tmp_path / "b", n_videos=3, config={"sampling": {"num_frames": 8}, "other": 1})
    build_index(tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "additions", tmp_path / "b" / "additions")
    with pytest.raises(CacheError, match="config hash"):
        FrameIndex.load(tmp_path / "b")
    assert any("faiss-index" in str(p) for p in verify_cache(tmp_path / "b"))
    mpath = tmp_path / "a" / "additions" / ADDITION / ADDITION_MANIFEST
    doc = json.loads(mpath.read_text())
    doc["meta"]["model"] = {"name": "ViT-L-14", "pretrained": "openai"}
    mpath.write_text(json.dumps(doc))
    with pytest.raises(CacheError, match="built with model"):
        FrameIndex.load(tmp_path / "a")
    (tmp_path / "a" / "additions" / ADDITION / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(CacheError, match="index.faiss"):
        FrameIndex.load(tmp_path / "a")


def test_search_without_an_index_says_how_to_build_it(tmp_path, capsys):
    make_cache(tmp_path / "c", n_videos=2)
    assert main(["cache", "search", str(tmp_path / "c"), "a red car"]) == 2
    assert "build it first" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """A cache precomputed with the tiny random CLIP (seed recorded in its config)."""
    from videocfr.precompute.cli import main as precompute

    root = tmp_path_factory.mktemp("search")
    clips.colour_segments(root, [20, 45], 60, name="a.mp4")
    clips.colour_segments(root, [30], 50, name="b.mp4")
    recs = [{"video_id": v, "video": f"{v}.mp4", "question_id": "q0",
             "question": "What colour is the screen?", "answer": "A"} for v in ("a", "b")]
    (root / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (root / "ds.yaml").write_text("annotation: ann.jsonl\nvideo_root: .\nformat: native\n")
    (root / "cfg.yaml").write_text("sampling: {num_frames: 8, short_side: 64}\n"
                                   "clip: {model: videocfr-tiny, pretrained: none, seed: 3}\n")
    assert precompute(["--config", str(root / "cfg.yaml"), "--dataset", str(root / "ds.yaml"),
                       "--out", str(root / "cache")]) == 0
    return root / "cache"


def test_cli_search_uses_the_caches_own_model(tiny_cache, capsys):
    from videocfr.precompute.clip import ClipEmbedder

    assert main(["cache", "index", str(tiny_cache)]) == 0
    capsys.readouterr()
    assert main(["cache", "search", str(tiny_cache), "a red car", "--top", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and rows[0]["rank"] == 1
    text = ClipEmbedder("videocfr-tiny", "none", seed=3).embed_texts(["a red car"])[0]
    cache = Cache(tiny_cache)
    x, ids = all_frames(cache)
    order, scores = brute(x, text, 4)
    assert [(r["video_id"], r["frame_index"]) for r in rows] == [ids[i][:2] for i in order]
    np.testing.assert_allclose([r["score"] for r in rows], scores, atol=1e-5)
    assert main(["cache", "search", str(tiny_cache), "a red car"]) == 0
    assert "video" in capsys.readouterr().out


def test_another_seed_does_not_reproduce_the_cache(tiny_cache):
    from videocfr.precompute.cache_model import cache_embedder, check_reproduces
    from videocfr.precompute.clip import ClipEmbedder

    cache = Cache(tiny_cache)
    assert cache_embedder(cache).model_info == cache.manifest["model"]
    with pytest.raises(CacheError, match="does not reproduce"):
        check_reproduces(cache, ClipEmbedder("videocfr-tiny", "none", seed=4))
