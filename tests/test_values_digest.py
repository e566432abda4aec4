"""Schema v2's values digest: every value of a shard is covered, and version-1 shards still read.

The digest is recomputed here from docs/cache-format.md's definition (not through
cache_format/digest.py), then each kind of value without a fletcher32 checksum — strings, small
integer and float tables, a shard attribute — is edited in place with the manifest re-signed:
every reader refuses it with kind "checksum". A version-1 shard (no digest) is still read, with
its weaker guarantee; a shard whose version or digest attribute was tampered with is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic_cache import make_cache
from videocfr.cache_format import Cache, CacheError, PriorTable, SchemaError, verify_cache
from videocfr.cache_format.io import sha256_file
from videocfr.cache_format.schema import SHARD_ATTRS, SHARD_DATASETS, STR, canonical_json


def _shard(cache: Path) -> Path:
    manifest = json.loads((cache / "manifest.json").read_text())
    return cache / manifest["shards"][0]["path"]


def _resign_manifest(cache: Path, version: int | None = None) -> None:
    path = cache / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["shards"]:
        entry["bytes"] = (cache / entry["path"]).stat().st_size
        entry["sha256"] = sha256_file(cache / entry["path"])
    if version is not None:
        manifest["schema_version"] = version
    path.write_text(json.dumps(manifest))


def _documented_digest(f: h5py.File) -> str:
    """values_sha256 as docs/cache-format.md defines it."""
    attrs = {k: (str(f.attrs[k]) if isinstance(f.attrs[k], str) else int(f.attrs[k]))
             for k in SHARD_ATTRS}
    h = hashlib.sha256(b"videocfr-values-v2\n" + canonical_json(attrs).encode() + b"\n")
    for name, (dtype, _) in SHARD_DATASETS.items():
        ds = f[name]
        h.update(f"{name} {json.dumps(list(ds.shape))}\n".encode())
        if dtype == STR:
            items = [s.encode("utf-8") for s in ds.asstr()[()].tolist()]
            h.update(hashlib.sha256(np.array([len(s) for s in items], "<u8").tobytes()).digest())
            h.update(hashlib.sha256(b"".join(items)).digest())
        else:
            h.update(ds[()].astype(np.dtype(dtype).newbyteorder("<")).tobytes())
    return h.hexdigest()


@pytest.fixture()
def cache(tmp_path) -> Path:
    make_cache(tmp_path / "c", n_videos=3, n_questions=2, n_failed=1)
    return tmp_path / "c"


def test_every_shard_carries_the_documented_digest(cache):
    with h5py.File(_shard(cache)) as f:
        assert f.attrs["schema_version"] == 2
        assert f.attrs["values_sha256"] == _documented_digest(f)
    assert json.loads((cache / "manifest.json").read_text())["schema_version"] == 2


def _set_string(f, name, i, value):
    values = f[name].asstr()[()].tolist()
    values[i] = value
    f[name][...] = np.array(values, dtype=object)


EDITS = {  # values no fletcher32 checksum covers
    "answer": lambda f: _set_string(f, "questions/answer", 0, "C"),
    "question-text": lambda f: _set_string(f, "questions/question", 1, "What happens?"),
    "path": lambda f: _set_string(f, "videos/path", 0, "videos/other.mp4"),
    "frame-index": lambda f: f["frames/index"].__setitem__(1, f["frames/index"][1] + 1),
    "timestamp": lambda f: f["frames/timestamp"].__setitem__(0, 0.5),
    "scene-bounds": lambda f: f["scenes/bounds"].__setitem__((0, 1), f["scenes/bounds"][0, 1] - 1),
    "fps": lambda f: f["videos/fps"].__setitem__(0, 30.0),
    "attribute": lambda f: f.attrs.__setitem__("part", 7),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_changed_value_is_refused_by_every_reader(cache, edit):
    with h5py.File(_shard(cache), "r+") as f:
        EDITS[edit](f)
    _resign_manifest(cache)
    problems = verify_cache(cache)
    assert problems and problems[0].kind == "checksum", problems
    assert "values_sha256" in str(problems[0])
    for read in (lambda c: Cache(c).keys(), PriorTable.load):
        with pytest.raises(CacheError) as err:
            read(cache)
        assert getattr(err.value, "kind", None) == "checksum", err.value


def _as_version_1(cache: Path) -> None:
    with h5py.File(_shard(cache), "r+") as f:
        del f.attrs["values_sha256"]
        f.attrs["schema_version"] = 1
    _resign_manifest(cache, version=1)


def test_a_version_1_cache_still_reads_without_the_digest(cache):
    expected = {k: PriorTable.load(cache).get(*k) for k in Cache(cache).keys()}
    _as_version_1(cache)
    assert verify_cache(cache) == []
    table = PriorTable.load(cache)
    for key, prior in expected.items():
        np.testing.assert_array_equal(table.get(*key), prior)
    with h5py.File(_shard(cache), "r+") as f:  # the weaker guarantee: a changed answer reads
        _set_string(f, "questions/answer", 0, "C")
    _resign_manifest(cache)
    assert verify_cache(cache) == []


def test_a_tampered_version_or_digest_attribute_is_refused(cache):
    shard = _shard(cache)
    with h5py.File(shard, "r+") as f:
        f.attrs["schema_version"] = 1  # a v1 shard has no digest: the number was changed
    _resign_manifest(cache)
    (problem,) = verify_cache(cache)
    assert problem.kind == "attribute" and "values_sha256" in str(problem)
    with h5py.File(shard, "r+") as f:
        f.attrs["schema_version"] = 2
        f.attrs["values_sha256"] = "not hex"
    _resign_manifest(cache)
    (problem,) = verify_cache(cache)
    assert problem.kind == "attribute" and "hex" in problem.reason
    with h5py.File(shard, "r+") as f:
        del f.attrs["values_sha256"]
    _resign_manifest(cache)
    (problem,) = verify_cache(cache)
    assert problem.kind == "attribute" and "missing" in problem.reason


def test_an_unknown_version_names_the_versions_read_and_the_rebuild(cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["schema_version"] = 3
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match=r"version 3 found, this reader reads versions 1, 2; "
                                          r"rebuild the cache \(`videocfr precompute`\)"):
        Cache(cache)
