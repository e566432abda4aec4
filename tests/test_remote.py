"""Caches on fsspec storage: Cache, PriorTable.load, `cache info|verify` on memory:// and file://
URLs, with the same untrusted-input checks as local caches."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from videocfr.cache_format import Cache, CacheError, PriorTable, SchemaError, verify_cache
from videocfr.cache_format.storage import RemotePath, as_path

from videocfr.cli import main

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def local(synthetic_cache) -> Path:
    return synthetic_cache("c", n_videos=4, n_questions=2, max_videos=2)


@pytest.fixture
def remote(local):
    """The cache uploaded to a fresh memory:// location; yields (url, filesystem, root)."""
    fs = fsspec.filesystem("memory")
    root = f"/team-{uuid.uuid4().hex}/cache"
    fs.put(str(local), root, recursive=True)
    yield f"memory://{root}", fs, root
    fs.rm(root.rsplit("/", 1)[0], recursive=True)


def test_memory_url_reads_like_the_local_cache(local, remote):
    url, _, _ = remote
    cache, ref = Cache(url), Cache(local)
    assert isinstance(cache.path, RemotePath) and cache.config_hash == ref.config_hash
    assert sorted(cache.keys()) == sorted(ref.keys())
    for key in ref.keys():
        np.testing.assert_array_equal(cache.prior(*key), ref.prior(*key))
        np.testing.assert_array_equal(cache.video(key[0]).embeddings, ref.video(key[0]).embeddings)
    table, ref_table = PriorTable.load(url), PriorTable.load(local)
    assert len(table) == len(ref_table) == 8
    np.testing.assert_array_equal(table.get("vid002", "q1"), ref_table.get("vid002", "q1"))
    with pytest.raises(KeyError, match="vid0"):
        table.get("vid09", "q0")
    assert verify_cache(url) == []


def test_file_url_is_a_local_path(local):
    assert as_path(f"file://{local}") == local
    assert len(PriorTable.load(f"file://{local}")) == 8


def test_cli_info_and_verify_on_a_url(remote, capsys):
    url, _, _ = remote
    assert main(["cache", "info", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == url and info["counts"]["questions"] == 8
    assert main(["cache", "verify", url]) == 0
    assert "OK" in capsys.readouterr().out


def test_altered_remote_shard_is_named(remote, capsys):
    url, fs, root = remote
    shard = sorted(p for p in fs.ls(f"{root}/shards", detail=False) if p.endswith(".h5"))[0]
    data = bytearray(fs.cat(shard))
    data[-100] ^= 0xFF
    fs.pipe(shard, bytes(data))
    problems = verify_cache(url)
    assert problems and shard.rsplit("/", 1)[1] in str(problems[0])
    assert "sha256" in str(problems[0])
    assert main(["cache", "verify", url]) == 1
    assert "FAIL" in capsys.readouterr().err


def test_hostile_remote_manifest(remote):
    url, fs, root = remote
    manifest = json.loads(fs.cat(f"{root}/manifest.json"))
    manifest["shards"][0]["path"] = "shards/../../elsewhere.h5"
    fs.pipe(f"{root}/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(SchemaError, match="inside shards/"):
        Cache(url)
    fs.pipe(f"{root}/manifest.json", b"{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        PriorTable.load(url)
    fs.rm(f"{root}/manifest.json")
    with pytest.raises(CacheError, match="unfinished"):
        Cache(url)


def test_not_a_readable_shard(remote):
    url, fs, root = remote
    shard = sorted(p for p in fs.ls(f"{root}/shards", detail=False) if p.endswith(".h5"))[0]
    fs.pipe(shard, b"this is not HDF5")
    with pytest.raises(SchemaError, match="not a readable HDF5 shard"):
        PriorTable.load(url)


@pytest.mark.parametrize("url, match", [
    ("memory://no/such/cache", "does not exist"),
    ("nosuchproto://bucket/cache", "Protocol not known"),
])
def test_unreachable_url_is_a_clear_error(url, match, capsys):
    with pytest.raises(CacheError, match=match):
        Cache(url)
    assert main(["cache", "info", url]) == 2
    assert url.split("://")[0] in capsys.readouterr().err


def test_missing_protocol_package_says_what_to_install():
    import importlib.util

    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed here")
    with pytest.raises(CacheError, match="s3fs"):
        Cache("s3://some-bucket/cache")


def test_re_fuse_export_and_search_read_a_remote_cache(local, tmp_path):
    pytest.importorskip("faiss")
    from videocfr.cache_format import FusionConfig
    from videocfr.cache_format.re_fuse import re_fuse_cache
    from videocfr.cache_format.search import FrameIndex, build_index

    build_index(local)
    fs = fsspec.filesystem("memory")
    root = f"/team-{uuid.uuid4().hex}/cache"
    fs.put(str(local), root, recursive=True)
    url = f"memory://{root}"
    manifest = re_fuse_cache(url, tmp_path / "ref", FusionConfig(preset="videocfr-ref"))
    assert manifest["config"]["refused_from"] == Cache(local).config_hash
    q = Cache(local).video("vid001").embeddings[3].astype(np.float32)
    hit = FrameIndex.load(url).search(q, top=1)[0][0]
    assert (hit.video_id, hit.frame_index) == ("vid001", int(Cache(local).video("vid001")
                                                            .frame_indices[3]))
    with pytest.raises(CacheError, match="needs a local cache"):
        build_index(url)
    fs.rm(root.rsplit("/", 1)[0], recursive=True)
