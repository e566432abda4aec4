"""Hostile caches: every reader refuses HDF5 tricks before reading a value, and none of them
ever reads a byte outside the cache.

Each case edits a copy of a synthetic cache with h5py and re-signs manifest.json (whoever sends a
cache controls both), then opens it through every reader: Cache, PriorTable.load, verify, merge,
`videocfr cache info` and the trainer's data path.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic_cache import make_cache, resign_values
from videocfr.cache_format import Cache, CacheError, PriorTable, verify_cache
from videocfr.cache_format.cli import cache_main
from videocfr.cache_format.io import sha256_file
from videocfr.cache_format.merge import merge_caches
from videocfr.cache_format.structure import StructureError

SENTINEL = np.float32(0.4242)  # the outside file's values: must never reach a reader


def _shards(cache: Path) -> list[Path]:
    manifest = json.loads((cache / "manifest.json").read_text())
    return [cache / s["path"] for s in manifest["shards"]]


def _resign(cache: Path) -> None:
    """Recompute the shards' values digests and the manifest's sizes and sha256s, as the sender
    of a hostile cache would."""
    path = cache / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["shards"]:
        resign_values(cache / entry["path"])
        entry["bytes"] = (cache / entry["path"]).stat().st_size
        entry["sha256"] = sha256_file(cache / entry["path"])
    path.write_text(json.dumps(manifest))


def _outside_h5(tmp: Path, n: int) -> Path:
    out = tmp / "outside.h5"
    with h5py.File(out, "w") as f:
        f["secret"] = np.full(n, SENTINEL, np.float32)
    return out


def _replace(f: h5py.File, name: str, **create) -> int:
    n = f[name].shape[0]
    del f[name]
    return n


def external_link(f, tmp):
    n = _replace(f, "qframes/prior")
    f["qframes/prior"] = h5py.ExternalLink(str(_outside_h5(tmp, n)), "/secret")


def external_storage(f, tmp):
    n = _replace(f, "qframes/prior")
    raw = tmp / "outside.bin"
    raw.write_bytes(np.full(n, SENTINEL, np.float32).tobytes())
    f.create_dataset("qframes/prior", shape=(n,), dtype=np.float32,
                     external=[(str(raw), 0, n * 4)])


def virtual_dataset(f, tmp):
    n = _replace(f, "qframes/prior")
    layout = h5py.VirtualLayout(shape=(n,), dtype=np.float32)
    layout[:] = h5py.VirtualSource(str(_outside_h5(tmp, n)), "secret", shape=(n,))
    f["qframes"].create_virtual_dataset("prior", layout)


def soft_link(f, tmp):
    _replace(f, "qframes/prior")
    f["qframes/prior"] = h5py.SoftLink("/qframes/uniform")


def shared_object(f, tmp):
    _replace(f, "qframes/prior")
    f["qframes/prior"] = f["qframes/uniform"]  # a second hard link to one dataset


def offset_out_of_table(f, tmp):
    off = f["videos/frame_offset"][()]
    off[-1] = 10**12
    f["videos/frame_offset"][...] = off


def compression_bomb(f, tmp):
    n = _replace(f, "qframes/prior")
    ds = f.create_dataset("qframes/prior", shape=(n,), maxshape=(None,), dtype=np.float32,
                          chunks=(1 << 16,), compression="gzip", compression_opts=9)
    ds.resize((1 << 32,))  # 16 GiB declared, a few bytes stored
    ds[: 1 << 16] = 0


def gigantic_shape(f, tmp):
    dim = f["frames/embedding"].shape[1]
    _replace(f, "frames/embedding")
    f.create_dataset("frames/embedding", shape=(1 << 34, dim), dtype=np.float16)


def gigantic_chunks(f, tmp):
    n = _replace(f, "qframes/prior")
    f.create_dataset("qframes/prior", data=np.full(n, 1 / 8, np.float32), maxshape=(None,),
                     chunks=(1 << 26,), fletcher32=True)


def vlen_numbers(f, tmp):
    n = _replace(f, "qframes/prior")
    f.create_dataset("qframes/prior", shape=(n,), dtype=h5py.vlen_dtype(np.float32))


def string_numbers(f, tmp):
    n = _replace(f, "videos/fps")
    f.create_dataset("videos/fps", data=np.array(["25"] * (n), dtype=object),
                     dtype=h5py.string_dtype())


def extra_object(f, tmp):
    f["qframes/notes"] = np.zeros(3)


def _rename_video(f, old: str, new: str) -> None:
    vids = f["videos/video_id"].asstr()[()].tolist()
    qv = f["questions/video_id"].asstr()[()].tolist()
    for name, values in (("videos/video_id", vids), ("questions/video_id", qv)):
        values = [new if v == old else v for v in values]
        del f[name]
        f.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())


def control_characters(f, tmp):
    _rename_video(f, "vid000", "vid\x1b[2J000")


def very_long_id(f, tmp):
    _rename_video(f, "vid000", "v" * 100_000)


CASES = {  # name: (edit of the first shard, the error kind a reader reports)
    "external-link": (external_link, "external-link"),
    "external-storage": (external_storage, "external-storage"),
    "virtual-dataset": (virtual_dataset, "virtual-dataset"),
    "soft-link": (soft_link, "soft-link"),
    "shared-object": (shared_object, "shared-object"),
    "offset-1e12": (offset_out_of_table, "offsets"),
    "compression-bomb": (compression_bomb, "filter"),
    "gigantic-shape": (gigantic_shape, "size"),
    "gigantic-chunks": (gigantic_chunks, "chunk"),
    "vlen-numbers": (vlen_numbers, "dtype"),
    "string-numbers": (string_numbers, "dtype"),
    "extra-object": (extra_object, "extra-object"),
    "control-characters": (control_characters, "bad-id"),
    "very-long-id": (very_long_id, "bad-id"),
}


def _hostile(tmp_path: Path, name: str) -> Path:
    cache = tmp_path / "cache"
    make_cache(cache, n_videos=3, n_questions=2, k=8, n_failed=1)
    edit = CASES[name][0]
    with h5py.File(_shards(cache)[0], "a") as f:
        edit(f, tmp_path)
    _resign(cache)
    return cache


def _duplicate_keys(tmp_path: Path) -> Path:
    """Two shards that both hold video 'vid000' (a key collision across shards)."""
    cache = tmp_path / "cache"
    make_cache(cache, n_videos=4, n_questions=1, k=8, n_failed=0, max_videos=2)
    first, second = _shards(cache)[:2]
    with h5py.File(first) as f:
        taken = f["videos/video_id"].asstr()[0]
    with h5py.File(second, "a") as f:
        _rename_video(f, f["videos/video_id"].asstr()[0], taken)
    _resign(cache)
    return cache


def _contains_sentinel(obj) -> bool:
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        return bool(np.any(np.isclose(obj.astype(np.float64), float(SENTINEL), atol=1e-6)))
    if isinstance(obj, dict):
        return any(_contains_sentinel(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_contains_sentinel(v) for v in obj)
    return False


OUTSIDE_READS: list[str] = []  # every place a reader returned a value from the outside file


def _every_reader(cache: Path, tmp_path: Path, capsys) -> dict[str, str]:
    """Open the cache through every reader; returns reader -> the kind (or message) refused.

    Whatever a reader does return is searched for the outside file's values (OUTSIDE_READS).
    """
    refused: dict[str, str] = {}
    try:
        c = Cache(cache)
        for vid, qid in list(c.keys()):
            if _contains_sentinel([c.prior(vid, qid), c.video(vid).embeddings]):
                OUTSIDE_READS.append(f"Cache {cache}")
    except CacheError as err:
        refused["Cache"] = getattr(err, "kind", str(err))
    try:
        table = PriorTable.load(cache)
        if _contains_sentinel([table.get(vid, qid) for vid, qid in table.keys()]):
            OUTSIDE_READS.append(f"PriorTable {cache}")
    except CacheError as err:
        refused["PriorTable.load"] = getattr(err, "kind", str(err))
    problems = verify_cache(cache)
    if problems:
        refused["verify"] = problems[0].kind
    out = tmp_path / f"merged-{len(list(tmp_path.iterdir()))}"
    other = tmp_path / "other"
    if not other.exists():
        make_cache(other, n_videos=1, n_questions=1, k=8, n_failed=0, prefix="oth", seed=7)
    try:
        merge_caches([cache, other], out)
    except CacheError as err:
        refused["merge"] = getattr(err, "kind", str(err))
    if out.exists():  # nothing from outside the cache may reach the merged cache
        for shard in out.rglob("*.h5"):
            if SENTINEL.tobytes() * 4 in shard.read_bytes():
                OUTSIDE_READS.append(f"merge {out}")
    capsys.readouterr()
    if cache_main(["info", str(cache)]) != 0:
        refused["info"] = capsys.readouterr().err
    from videocfr.train.data import CacheSamples
    try:
        CacheSamples(cache)
    except CacheError as err:
        refused["videocfr.train.data"] = getattr(err, "kind", str(err))
    return refused


READERS = {"Cache", "PriorTable.load", "verify", "merge", "info", "videocfr.train.data"}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_cache_is_refused_by_every_reader(tmp_path, capsys, name):
    cache = _hostile(tmp_path, name)
    kind = CASES[name][1]
    refused = _every_reader(cache, tmp_path, capsys)
    assert set(refused) == READERS, f"not refused by {READERS - set(refused)}"
    assert not OUTSIDE_READS, OUTSIDE_READS
    for reader in ("Cache", "PriorTable.load", "verify", "merge", "videocfr.train.data"):
        assert refused[reader] == kind, (reader, refused[reader])
    assert f"[{kind}]" in refused["info"]


def test_hostile_duplicate_keys_across_shards(tmp_path, capsys):
    cache = _duplicate_keys(tmp_path)
    refused = _every_reader(cache, tmp_path, capsys)
    assert set(refused) == READERS
    assert refused["verify"] == "duplicate-key" and refused["Cache"] == "duplicate-key"


def test_hostile_error_names_the_dataset(tmp_path):
    cache = _hostile(tmp_path, "external-link")
    with pytest.raises(StructureError) as info:
        Cache(cache).keys()
    assert info.value.path == "/qframes/prior" and "only hard links" in str(info.value)
    (problem,) = verify_cache(cache)
    assert problem.kind == "external-link" and problem.where.endswith(":/qframes/prior")


def test_hostile_summary(tmp_path_factory, capsys):
    """The figure the README quotes: cases tried, refused by every reader, outside reads."""
    tried = refused = 0
    OUTSIDE_READS.clear()
    for name in CASES:
        tmp = tmp_path_factory.mktemp(name)
        cache = _hostile(tmp, name)
        tried += 1
        refused += set(_every_reader(cache, tmp, capsys)) == READERS
    tried += 1
    refused += set(_every_reader(_duplicate_keys(tmp_path_factory.mktemp("dup")),
                                 tmp_path_factory.mktemp("dup-out"), capsys)) == READERS
    with capsys.disabled():
        print(f"\nhostile-cache cases tried={tried} refused={refused} "
              f"outside_reads={len(OUTSIDE_READS)}")
    assert refused == tried and not OUTSIDE_READS


def test_hostile_duplicate_keys_in_one_table_are_found():
    """Two equal keys that race for one free slot are still counted as duplicates."""
    n = 4
    priors = np.full(2 * n, 0.5, np.float32)
    bounds = np.array([[2 * i, 2 * i + 2] for i in range(n)], np.int64)
    with pytest.raises(StructureError, match="appear twice"):
        PriorTable(priors, ["a", "b", "a", "c"], ["q", "q", "q", "q"], bounds, {}, "h")


def test_hostile_manifest_link_outside_is_refused(tmp_path):
    cache = tmp_path / "cache"
    make_cache(cache, n_videos=1, n_questions=1, k=8, n_failed=0)
    outside = tmp_path / "elsewhere.json"
    outside.write_text((cache / "manifest.json").read_text())
    (cache / "manifest.json").unlink()
    (cache / "manifest.json").symlink_to(outside)
    with pytest.raises(CacheError, match="leads outside the cache"):
        Cache(cache)
    assert "leads outside" in verify_cache(cache)[0].reason
