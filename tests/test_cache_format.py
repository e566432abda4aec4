"""cache_format: round trip, determinism, lookups, errors and merge."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import time

import h5py
import numpy as np
import pytest
from synthetic_cache import TEST_CONFIG, TEST_MODEL, make_cache, make_question, make_video
from videocfr.cache_format import (
    Cache,
    CacheError,
    PriorTable,
    SchemaError,
    ShardWriter,
    VideoRecord,
    config_hash,
    finalize_cache,
    job_done,
    verify_cache,
)
from videocfr.cache_format.merge import merge_caches


def _shard_hashes(path):
    return [s["sha256"] for s in json.loads((path / "manifest.json").read_text())["shards"]]


def test_round_trip_every_field(tmp_path):
    video = make_video("clip", k=6, dim=8, seed=3, num_scenes=3)
    questions = [make_question(video, "q1", seed=1), make_question(video, "q2", seed=2,
                                                                   preset="videocfr-ref")]
    failed = VideoRecord.failed("broken", "videos/broken.mp4", "truncated file", "ab" * 32)
    with ShardWriter(tmp_path / "c", TEST_CONFIG, embed_dim=8, model=TEST_MODEL) as w:
        w.add(video, questions)
        w.add(failed, [], skipped_questions=2)
    manifest = finalize_cache(tmp_path / "c")
    assert manifest["counts"] == {"videos": 2, "failed_videos": 1, "questions": 2,
                                  "skipped_questions": 2}
    assert manifest["failures"] == [{"video_id": "broken", "path": "videos/broken.mp4",
                                     "error": "truncated file"}]
    assert manifest["config_hash"] == config_hash(TEST_CONFIG)
    cache = Cache(tmp_path / "c")
    got = cache.video("clip")
    for name in ("video_id", "path", "content_hash", "status", "error", "fps", "duration",
                 "num_frames"):
        assert getattr(got, name) == getattr(video, name), name
    for name in ("frame_indices", "timestamps", "scenes", "frame_scene", "scene_rep",
                 "embeddings"):
        np.testing.assert_array_equal(getattr(got, name), getattr(video, name), err_msg=name)
        assert getattr(got, name).dtype == getattr(video, name).dtype, name
    for q in questions:
        back = cache.question("clip", q.question_id)
        for name in ("question", "options", "answer", "problem_type"):
            assert getattr(back, name) == getattr(q, name), name
        for name in ("text_embedding", "uniform", "scene", "semantic", "semantic_raw", "prior"):
            np.testing.assert_array_equal(getattr(back, name), getattr(q, name), err_msg=name)
        np.testing.assert_array_equal(cache.prior("clip", q.question_id), q.prior)
        assert set(cache.saliences("clip", q.question_id)) == {"uniform", "scene", "semantic"}
    bad = cache.video("broken")
    assert (bad.status, bad.error, bad.num_sampled) == ("failed", "truncated file", 0)
    assert sorted(cache.keys()) == [("clip", "q1"), ("clip", "q2")]
    table = PriorTable.load(tmp_path / "c")
    assert len(table) == 2 and ("clip", "q1") in table and ("clip", "q3") not in table
    np.testing.assert_array_equal(table.get("clip", "q2"), questions[1].prior)
    assert not table.get("clip", "q2").flags.writeable


def test_same_input_same_bytes(tmp_path):
    make_cache(tmp_path / "a", n_videos=5, max_videos=2)
    time.sleep(1.1)  # a timestamp inside a shard would now differ
    make_cache(tmp_path / "b", n_videos=5, max_videos=2)
    assert _shard_hashes(tmp_path / "a") == _shard_hashes(tmp_path / "b")
    assert len(_shard_hashes(tmp_path / "a")) == 3
    make_cache(tmp_path / "c", n_videos=5, max_videos=2, seed=1)
    assert _shard_hashes(tmp_path / "a") != _shard_hashes(tmp_path / "c")


def test_prior_table_many_shards_and_batch(tmp_path):
    make_cache(tmp_path / "c", n_videos=30, n_questions=3, max_videos=4)
    cache = Cache(tmp_path / "c")
    table = PriorTable.load(tmp_path / "c")
    keys = sorted(cache.keys())
    assert len(table) == len(keys) == 90
    for key, prior in zip(keys, table.get_batch(keys)):
        np.testing.assert_array_equal(prior, cache.prior(*key))
        assert abs(float(prior.sum()) - 1) < 1e-5
    clone = pickle.loads(pickle.dumps(table))  # rebuilds its index (hashes are per process)
    np.testing.assert_array_equal(clone.get(*keys[7]), table.get(*keys[7]))


def test_missing_keys_name_the_key_and_close_ones(tmp_path):
    make_cache(tmp_path / "c", n_videos=3)
    table = PriorTable.load(tmp_path / "c")
    with pytest.raises(KeyError, match=r"question 'q7' of video 'vid001'.*\['q0', 'q1'\]"):
        table.get("vid001", "q7")
    with pytest.raises(KeyError, match=r"video 'vid01' is not in the cache; close video ids: "
                                       r"\['vid001'"):
        table.get("vid01", "q0")
    with pytest.raises(KeyError, match=r"'bad000' failed in precompute \(decode failed"):
        table.get("bad000", "q0")
    assert table.find("vid001", "q7") is None
    with pytest.raises(KeyError, match="vid001"):
        Cache(tmp_path / "c").prior("vid001", "nope")


def _child_prior(cache):
    return cache.prior("vid001", "q1").tolist()


def test_cache_is_usable_in_a_spawned_worker(tmp_path):
    make_cache(tmp_path / "c", n_videos=2)
    cache = Cache(tmp_path / "c")
    expected = cache.prior("vid001", "q1").tolist()  # opens files in this process
    with mp.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_child_prior, (cache,)) == expected


def test_config_hash_and_version_mismatch_name_both(tmp_path):
    make_cache(tmp_path / "c", n_videos=2)
    good = config_hash(TEST_CONFIG)
    with pytest.raises(CacheError, match=f"config hash {good} found, expected {'0' * 64}"):
        Cache(tmp_path / "c", expect_config_hash="0" * 64)
    manifest = json.loads((tmp_path / "c/manifest.json").read_text())
    manifest["schema_version"] = 99
    (tmp_path / "c/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaError,
                       match="schema version 99 found, this reader reads versions 1, 2"):
        Cache(tmp_path / "c")


def test_writer_guards(tmp_path):
    video = make_video("v", k=4, dim=8)
    with pytest.raises(RuntimeError, match="context manager"):
        ShardWriter(tmp_path / "c", TEST_CONFIG, embed_dim=8, model=TEST_MODEL).add(video, [])
    with pytest.raises(SchemaError, match="added twice"):
        with ShardWriter(tmp_path / "c", TEST_CONFIG, embed_dim=8, model=TEST_MODEL) as w:
            w.add(video, [])
            w.add(video, [])
    assert not job_done(tmp_path / "c", TEST_CONFIG, 0, 1)  # the failed job left no marker
    with pytest.raises(SchemaError, match="embedding dim 8 != the cache's 16"):
        with ShardWriter(tmp_path / "d", TEST_CONFIG, embed_dim=16, model=TEST_MODEL) as w:
            w.add(video, [])
    odd = make_video("odd", k=4, dim=8)
    odd.frame_indices = odd.frame_indices[:3]
    with pytest.raises(SchemaError, match="K must be even"):
        odd.validate()
    q = make_question(video, "q")
    q.prior = q.prior * 2
    with pytest.raises(SchemaError, match="sum to 1"):
        q.validate(4)
    q = make_question(video, "q")
    q.semantic[0] = np.nan
    with pytest.raises(SchemaError, match="NaN"):
        q.validate(4)


def test_jobs_markers_and_finalize(tmp_path):
    cfg = {"x": 1}
    for job in (0, 2):
        with ShardWriter(tmp_path, cfg, embed_dim=8, model=TEST_MODEL, job_index=job,
                         num_jobs=3) as w:
            w.add(make_video(f"v{job}", k=4, dim=8), [])
    assert job_done(tmp_path, cfg, 0, 3) and not job_done(tmp_path, cfg, 1, 3)
    with pytest.raises(CacheError, match=r"1 of 3 shard jobs are not finished \(job index 1\)"):
        finalize_cache(tmp_path)
    with pytest.raises(CacheError, match="already finished"):
        with ShardWriter(tmp_path, cfg, embed_dim=8, model=TEST_MODEL, job_index=0, num_jobs=3):
            pass
    with pytest.raises(CacheError, match="config hash"):
        job_done(tmp_path, {"x": 2}, 1, 3)
    with pytest.raises(CacheError, match="started with 3 shard jobs"):
        job_done(tmp_path, cfg, 1, 4)
    with ShardWriter(tmp_path, cfg, embed_dim=8, model=TEST_MODEL, job_index=1, num_jobs=3) as w:
        w.add(make_video("v1", k=4, dim=8), [])
    manifest = finalize_cache(tmp_path)
    assert manifest["counts"]["videos"] == 3 and len(manifest["shards"]) == 3
    assert verify_cache(tmp_path) == []


def test_merge_dedups_by_content_and_rejects_conflicts(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_cache(a, n_videos=3, n_failed=0)
    with ShardWriter(b, TEST_CONFIG, embed_dim=16, model=TEST_MODEL) as w:
        same = make_video("vid001", k=8, dim=16, seed=1)  # same id, same content as a's vid001
        w.add(same, [make_question(same, "q9", seed=9)])
        renamed = make_video("copy_of_2", k=8, dim=16, seed=2)  # a's vid002 under another id
        w.add(renamed, [make_question(renamed, "q0", seed=5)])
        new = make_video("fresh", k=8, dim=16, seed=77)
        w.add(new, [make_question(new, "q0", seed=6)])
    finalize_cache(b)
    manifest = merge_caches([a, b], tmp_path / "m")
    assert manifest["counts"]["videos"] == 4  # vid000-002 + fresh; copy_of_2 is an alias
    assert verify_cache(tmp_path / "m") == []
    cache = Cache(tmp_path / "m")
    assert sorted(cache.question_ids("vid001")) == ["q0", "q1", "q9"]
    assert cache.video("copy_of_2").video_id == "vid002"
    table = PriorTable.load(tmp_path / "m")
    np.testing.assert_array_equal(table.get("copy_of_2", "q0"), Cache(b).prior("copy_of_2", "q0"))
    np.testing.assert_array_equal(table.get("vid002", "q0"), Cache(a).prior("vid002", "q0"))

    c = tmp_path / "c"
    with ShardWriter(c, TEST_CONFIG, embed_dim=16, model=TEST_MODEL) as w:
        w.add(make_video("vid000", k=8, dim=16, seed=1234), [])  # same id, other content
    finalize_cache(c)
    with pytest.raises(CacheError, match="'vid000' names different files"):
        merge_caches([a, c], tmp_path / "m2")
    d = tmp_path / "d"
    make_cache(d, n_videos=1, config={"other": True})
    with pytest.raises(CacheError, match="config hash .* only caches built with the same"):
        merge_caches([a, d], tmp_path / "m3")
    with pytest.raises(CacheError, match="not empty"):
        merge_caches([a, b], tmp_path / "m")


def test_shard_file_has_documented_layout(tmp_path):
    make_cache(tmp_path / "c", n_videos=2, n_questions=1, k=4, dim=8)
    shard = next((tmp_path / "c/shards").glob("*.h5"))
    with h5py.File(shard) as f:
        assert f.attrs["schema_version"] == 2
        assert f["frames/embedding"].dtype == np.float16 and f["frames/embedding"].fletcher32
        assert f["qframes/prior"].fletcher32 and f["qframes/prior"].dtype == np.float32
        assert list(f["videos/frame_offset"][()]) == [0, 4, 8, 8]  # the failed video: no frames
        assert list(f["videos/status"].asstr()[()]) == ["ok", "ok", "failed"]


def test_a_job_clears_only_its_own_leftovers(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    mine = shards / ".tmp-00000-of-00002-0000.h5.0123456789ab"  # of a dead attempt (no claim)
    other = shards / ".tmp-00001-of-00002-0000.h5.ba9876543210"  # job 1 may be writing now
    mine.write_bytes(b"x")
    other.write_bytes(b"x")
    with ShardWriter(tmp_path, {"x": 1}, embed_dim=8, model=TEST_MODEL, job_index=0,
                     num_jobs=2) as w:
        w.add(make_video("v", k=4, dim=8), [])
    assert not mine.exists() and other.exists()
