"""verify, untrusted caches and crash safety of the writer."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic_cache import make_cache, resign_values
from videocfr.cache_format import (
    Cache,
    CacheError,
    PriorTable,
    SchemaError,
    verify_cache,
    verify_shard,
)
from videocfr.cache_format.verify import verify_shards
from videocfr.cache_format.writer import write_shard

TESTS = Path(__file__).parent


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path, manifest):
    (path / "manifest.json").write_text(json.dumps(manifest))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_sound_cache_verifies(tmp_path):
    make_cache(tmp_path / "c", n_videos=6, max_videos=2)
    assert verify_cache(tmp_path / "c") == []


@pytest.mark.parametrize("dataset", ["frames/embedding", "qframes/prior"])
def test_one_flipped_byte_is_caught(tmp_path, dataset):
    make_cache(tmp_path / "c", n_videos=3)
    shard = tmp_path / "c" / _manifest(tmp_path / "c")["shards"][0]["path"]
    with h5py.File(shard) as f:
        offset = f[dataset].id.get_chunk_info(0).byte_offset + 5
    _flip(shard, offset)
    problems = verify_cache(tmp_path / "c")
    assert len(problems) == 1 and "sha256" in problems[0].reason
    assert problems[0].where.endswith(".h5")
    # without the manifest, HDF5's fletcher32 checksum still catches it
    standalone = verify_shard(shard)
    assert standalone and "checksum" in standalone[0].reason.lower()


def test_flipped_byte_anywhere_in_shard_is_caught(tmp_path):
    make_cache(tmp_path / "c", n_videos=2)
    shard = tmp_path / "c" / _manifest(tmp_path / "c")["shards"][0]["path"]
    rng = random.Random(0)
    original = shard.read_bytes()
    for _ in range(5):
        shard.write_bytes(original)
        _flip(shard, rng.randrange(len(original)))
        assert verify_cache(tmp_path / "c"), "a flipped byte went unnoticed"


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("shards"), "field 'shards' is missing"),
    (lambda m: m.update(embed_dim="16"), "field 'embed_dim' must be int"),
    (lambda m: m["shards"][0].update(path="../../etc/passwd"), "must be relative and inside"),
    (lambda m: m["shards"][0].update(path="/etc/passwd"), "must be relative and inside"),
    (lambda m: m["shards"][0].update(path="shards/../../x.h5"), "must be relative and inside"),
    (lambda m: m["shards"][0].update(sha256="xyz"), "sha256 must be 64"),
    (lambda m: m["config"].update(extra=1), "does not match the config"),
    (lambda m: m.update(format="pickle"), "format 'pickle'"),
], ids=["no-shards", "dim-str", "dotdot", "absolute", "inner-dotdot", "sha", "config-edited",
        "format"])
def test_malformed_manifest_is_rejected(tmp_path, edit, message):
    make_cache(tmp_path / "c", n_videos=2)
    manifest = _manifest(tmp_path / "c")
    edit(manifest)
    _write_manifest(tmp_path / "c", manifest)
    with pytest.raises(SchemaError, match=message):
        Cache(tmp_path / "c")
    assert verify_cache(tmp_path / "c")


def test_manifest_not_json_or_absent(tmp_path):
    make_cache(tmp_path / "c", n_videos=1)
    (tmp_path / "c/manifest.json").write_text('{"format": NaN}')
    with pytest.raises(SchemaError, match="not valid JSON"):
        Cache(tmp_path / "c")
    (tmp_path / "c/manifest.json").unlink()
    with pytest.raises(CacheError, match="unfinished"):
        PriorTable.load(tmp_path / "c")


def test_symlink_out_of_the_cache_is_rejected(tmp_path):
    make_cache(tmp_path / "c", n_videos=1)
    outside = tmp_path / "outside.h5"
    shard_rel = _manifest(tmp_path / "c")["shards"][0]["path"]
    shutil.copy(tmp_path / "c" / shard_rel, outside)
    (tmp_path / "c" / shard_rel).unlink()
    (tmp_path / "c" / shard_rel).symlink_to(outside)
    with pytest.raises(SchemaError, match="leads outside the cache"):
        Cache(tmp_path / "c")


def _rewrite_dataset(shard: Path, name: str, data: np.ndarray) -> None:
    with h5py.File(shard, "a") as f:
        del f[name]
        f.create_dataset(name, data=data)
    resign_values(shard)  # the values are bad as written: the value checks must see them


@pytest.mark.parametrize("name, data, message", [
    ("qframes/prior", lambda d: d.astype(np.float64), "dtype float64, expected float32"),
    ("frames/embedding", lambda d: d[:, :3], r"shape \(\d+, 3\), expected \(N, 16\)"),
    ("videos/fps", lambda d: d[:1], "has 1 rows, its table 'videos' has"),
    ("videos/status", lambda d: np.array([1.0] * len(d)), "dtype float64, expected str"),
    ("qframes/prior", lambda d: d * 1.5, "do not sum to 1"),
    ("qframes/semantic", lambda d: np.full_like(d, np.inf), "NaN or inf"),
    ("questions/video_row", lambda d: d + 100, "outside the videos table"),
], ids=["dtype", "shape", "rows", "str-dtype", "sum", "inf", "row-range"])
def test_malformed_shard_is_rejected(tmp_path, name, data, message):
    make_cache(tmp_path / "c", n_videos=2)
    shard = tmp_path / "c" / _manifest(tmp_path / "c")["shards"][0]["path"]
    with h5py.File(shard) as f:
        original = f[name][()]
    _rewrite_dataset(shard, name, data(original))
    problems = verify_shard(shard)
    assert any(re.search(message, p.reason) for p in problems), problems


def test_non_hdf5_and_missing_dataset(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert "unreadable" in verify_shard(bad)[0].reason
    make_cache(tmp_path / "c", n_videos=1)
    shard = tmp_path / "c" / _manifest(tmp_path / "c")["shards"][0]["path"]
    with h5py.File(shard, "a") as f:
        del f["scenes/bounds"]
    (problem,) = verify_shard(shard)
    assert problem.kind == "missing" and problem.where.endswith(":scenes/bounds")


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from synthetic_cache import make_cache
    make_cache({out!r}, n_videos=400, n_questions=3, k=8, dim=64, max_videos=3)
""")


def _check_final_paths(out: Path) -> None:
    """Everything at a final path is whole: shards verify, a marker's files exist."""
    shards = out / "shards"
    paths = sorted(shards.glob("*.h5")) if shards.exists() else []
    marker = shards / "job-00000-of-00001.json"
    if marker.exists():
        paths += [out / entry["path"] for entry in json.loads(marker.read_text())["files"]]
    for path, problems in verify_shards(paths).items():  # checked in parallel children
        assert problems == [], f"{path} is at a final path but not whole"
    if (out / "manifest.json").exists():
        assert verify_cache(out) == []


@pytest.mark.timeout(3600)  # 22 full writes of 400 videos: > 600 s on a loaded 2-core machine
def test_writer_killed_at_random_moments_leaves_only_whole_shards(tmp_path):
    out = tmp_path / "cache"
    script = WRITER_SCRIPT.format(tests=str(TESTS), out=str(out))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    full_s = time.monotonic() - t0  # how long an uninterrupted write takes here
    shutil.rmtree(out)
    rng = random.Random(1234)
    kills = 0
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", script], env=env)
        time.sleep(rng.uniform(0.2, 0.95) * full_s)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        _check_final_paths(out)
        if (out / "shards/job-00000-of-00001.json").exists():
            shutil.rmtree(out)  # the job finished before the kill: start over to kill it again
    assert kills >= 10, f"only {kills} of 20 writers were killed before they finished"
    subprocess.run([sys.executable, "-c", script], env=env, check=True)  # the rerun completes
    assert verify_cache(out) == []
    assert _manifest(out)["counts"]["questions"] == 1200


def test_write_shard_rejects_nothing_silently(tmp_path):
    # a shard with zero videos is legal and verifies (a job may get no videos)
    write_shard(tmp_path / "empty.h5", [], [], [], {
        "format": "videocfr-cache", "schema_version": 2, "config_hash": "0" * 64,
        "embed_dim": 4, "job_index": 0, "num_jobs": 1, "part": 0}, 4)
    assert verify_shard(tmp_path / "empty.h5") == []


def test_counts_that_disagree_with_the_shards_are_reported(tmp_path):
    make_cache(tmp_path / "c", n_videos=3, n_failed=1)
    manifest = _manifest(tmp_path / "c")
    manifest["shards"][0]["failed_videos"] = 0
    manifest["counts"]["questions"] = 99
    _write_manifest(tmp_path / "c", manifest)
    reasons = [p.reason for p in verify_cache(tmp_path / "c")]
    assert reasons == ["holds 1 failed_videos, manifest says 0"]
    manifest["shards"][0]["failed_videos"] = 1
    _write_manifest(tmp_path / "c", manifest)
    reasons = [p.reason for p in verify_cache(tmp_path / "c")]
    assert reasons == ["counts.questions is 99, the shards hold 6"]
