"""Byte-level mutants of a cache's shard, and what every reader makes of each one.

A mutant is a copy of a small cache whose one shard got one mutation — a single bit flipped, a
block of random bytes, a zeroed block, random bytes in the first 4 KiB (the superblock and the
root metadata), or a truncation — with the manifest re-signed as a hostile sender would: the
shard's content-named file renamed to its new sha256, its size and sha256 recomputed.

`read_everything(cache)` is what a reader can get out of a cache: `verify_cache`'s problems,
then every key and prior of `PriorTable.load` and every record of `Cache` (videos, questions),
each either a digest of all values read or the error it raised. It runs in a fresh process per
mutant (`judge`) with a time limit, so that a hang or a crash of the reading process itself is
seen: each mutant ends

    refused  verify reports a problem or a reader raises, and no reader returns a value that
             differs from the original's,
    same     verify is clean and every reader reads exactly the original values,
    silent   some reader returned values that differ from the original's without raising,
    crash    the reading process died (a signal, or no answer),
    hang     the reading process gave no answer within the time limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

KINDS = ("flip", "block", "zero", "meta", "truncate")
OUTCOMES = ("refused", "same", "silent", "crash", "hang")
_NAME = re.compile(r"-([0-9a-f]{12})\.h5$")


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutation of `data` (never the identity)."""
    out = bytearray(data)
    n = len(out)
    if kind == "flip":
        i = int(rng.integers(n))
        out[i] ^= 1 << int(rng.integers(8))
    elif kind == "block":
        size = int(rng.integers(1, 65))
        i = int(rng.integers(n - size))
        out[i:i + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    elif kind == "zero":
        size = int(rng.integers(16, 4097))
        i = int(rng.integers(n - size))
        out[i:i + size] = bytes(size)
    elif kind == "meta":
        for _ in range(int(rng.integers(1, 9))):
            out[int(rng.integers(min(n, 4096)))] = int(rng.integers(256))
    elif kind == "truncate":
        out = out[:int(rng.integers(n))]
    else:
        raise ValueError(f"unknown mutation {kind!r}; one of {KINDS}")
    if bytes(out) == data:  # a random block equal to the original: flip one bit of it
        out[0] ^= 1
    return bytes(out)


def make_mutant(source: Path, out: Path, kind: str, rng: np.random.Generator) -> Path:
    """A copy of the cache `source` at `out` with one shard mutated and the manifest re-signed."""
    shutil.copytree(source, out)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["shards"][int(rng.integers(len(manifest["shards"])))]
    old = out / entry["path"]
    data = mutate(old.read_bytes(), kind, rng)
    digest = hashlib.sha256(data).hexdigest()
    new_name = _NAME.sub(f"-{digest[:12]}.h5", old.name)
    old.unlink()
    (old.parent / new_name).write_bytes(data)
    entry.update(path=f"shards/{new_name}", bytes=len(data), sha256=digest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return out


def _digest(values) -> str:
    h = hashlib.sha256()
    for v in values:
        h.update(repr(v).encode() if not isinstance(v, np.ndarray) else
                 v.dtype.str.encode() + repr(v.shape).encode() + v.tobytes())
    return h.hexdigest()


def read_everything(cache: str) -> dict:
    """What each reader makes of `cache`: problems, or digests of every value it returns.

    Returns:
        {"verify": [problem lines], "PriorTable": digest | "refused: ...", "Cache": digest |
        "refused: ...", "fields": {record field: digest}} (fields: what differs, when a mutant
        is read differently).
    """
    from videocfr.cache_format import Cache, CacheError, PriorTable, verify_cache

    out: dict = {"verify": [str(p) for p in verify_cache(cache)], "fields": {}}
    try:
        table = PriorTable.load(cache)
        keys = sorted(table.keys())
        out["PriorTable"] = _digest([*keys, *(table.get(*k) for k in keys)])
    except (CacheError, KeyError, ValueError) as err:
        out["PriorTable"] = f"refused: {type(err).__name__}: {err}"
    try:
        c = Cache(cache)
        fields: dict[str, list] = {}
        for vid in sorted(c.video_ids()):
            for name, value in vars(c.video(vid)).items():
                fields.setdefault(f"video.{name}", []).append(value)
        for key in sorted(c.keys()):
            for name, value in vars(c.question(*key)).items():
                fields.setdefault(f"question.{name}", []).append(value)
        out["fields"] = {name: _digest(values) for name, values in sorted(fields.items())}
        out["Cache"] = _digest(out["fields"].values())
    except (CacheError, KeyError, ValueError, OSError, UnicodeDecodeError) as err:
        out["Cache"] = f"refused: {type(err).__name__}: {err}"
    return out


def read_remote(cache: str) -> dict:
    """`read_everything` of the cache uploaded to a memory:// URL (the fsspec path)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(cache, "/fuzz/cache", recursive=True)
    return read_everything("memory:///fuzz/cache")


def judge(cache: Path, reference: dict | None, timeout_s: float, env: dict | None = None,
          remote: bool = False) -> tuple[str, dict]:
    """Run `read_everything` (`read_remote`) on `cache` in a fresh process; (outcome, what it
    read)."""
    fn = "read_remote" if remote else "read_everything"
    code = (f"import json, sys; sys.path.insert(0, sys.argv[2]); from cache_fuzz import {fn}; "
            f"print(json.dumps({fn}(sys.argv[1])))")
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(cache), str(Path(__file__).parent)],
                              capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return "hang", {}
    try:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "crash", {"returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    if reference is None:
        return "same", got
    return classify(got, reference), got


def differing_fields(got: dict, reference: dict) -> list[str]:
    """The record fields a mutant is read with other values than the original."""
    return [k for k, v in got.get("fields", {}).items() if reference["fields"].get(k) != v]


def classify(got: dict, reference: dict) -> str:
    """refused / same / silent of one reading against the original cache's."""
    readers = ("PriorTable", "Cache")
    differs = [r for r in readers if not got[r].startswith("refused")
               and got[r] != reference[r]]
    if differs:
        return "silent"
    if got["verify"] or any(got[r] != reference[r] for r in readers):
        return "refused"
    return "same"
