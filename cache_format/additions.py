"""Optional, versioned additions to a finished cache: margins, a search index, selections.

A cache's core (manifest.json + shards/) is what cache_format v1 readers read; they ignore
everything else. An addition lives beside it in its own directory::

    additions/<name>/addition.json      written last: the addition exists only when whole
    additions/<name>/<file> ...         its files (HDF5, a faiss index, JSON)

addition.json records the addition's name and its own schema version, the config hash of the
cache it was computed from, what made it (`meta`), and every file's size and sha256. A reader
trusts nothing else: an addition of another cache (config hash), a missing or altered file, a file
name that leaves the directory or a symlink is refused with a CacheError naming it.

Writes are atomic: files go to a hidden staging directory, addition.json is written last, and the
directory is renamed into place (an older version of the addition is removed only after that).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .io import fsync_dir, sha256_file, write_json_atomic
from .manifest import load_manifest, read_untrusted_json
from .schema import CacheError, SchemaError
from .storage import as_path

ADDITIONS_DIR = "additions"
ADDITION_MANIFEST = "addition.json"
ADDITION_FORMAT = "videocfr-addition"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_MANIFEST_BYTES = 1 << 20


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name == ADDITION_MANIFEST:
        raise SchemaError(f"{what} {name!r} is not a valid name (lower-case letters, digits, "
                          f"'.', '_', '-'; at most 64 characters)")
    return name


@dataclass(frozen=True)
class Addition:
    """A checked addition of a cache.

    Attributes:
        name: the addition's name (its directory under additions/).
        version: the addition's own schema version.
        meta: what made it (free JSON, e.g. model name, M, seed).
        files: file name -> {"bytes", "sha256"}.
        directory: where its files are.
    """

    name: str
    version: int
    meta: dict
    files: dict
    directory: Path

    def path(self, file: str) -> Path:
        """Path of one of the addition's files (KeyError naming the known files)."""
        if file not in self.files:
            raise KeyError(f"addition {self.name!r} has no file {file!r}; it has "
                           f"{sorted(self.files)}")
        return self.directory / file


def addition_dir(cache_dir: str | Path, name: str) -> Path:
    return as_path(cache_dir) / ADDITIONS_DIR / _check_name(name, "addition name")


def list_additions(cache_dir: str | Path) -> list[str]:
    """Names of the additions present (finished or not: `load_addition` checks them)."""
    root = as_path(cache_dir) / ADDITIONS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir())


@contextmanager
def write_addition(cache_dir: str | Path, name: str, version: int, meta: dict
                   ) -> Iterator[Path]:
    """Stage an addition's files; on a clean exit commit them atomically.

    Usage::

        with write_addition(cache, "margins", 1, {"m": 8}) as stage:
            write_my_file(stage / "margins.h5")

    Args:
        cache_dir: a finished cache (its manifest gives the config hash recorded).
        name: the addition's name.
        version: the addition's own schema version (readers ask for the one they read).
        meta: JSON-serialisable description of what made it.

    Yields:
        The staging directory to write the files into (plain files only, no subdirectories).
    """
    cache_dir = Path(cache_dir)
    manifest = load_manifest(cache_dir)
    final = addition_dir(cache_dir, name)
    root = final.parent
    root.mkdir(exist_ok=True)
    stage = root / f".tmp-{name}.{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
        files = {}
        for p in sorted(stage.iterdir()):
            _check_name(p.name, "addition file")
            if p.is_symlink() or not p.is_file():
                raise CacheError(f"addition {name!r}: {p.name} must be a plain file")
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
            files[p.name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        if not files:
            raise CacheError(f"addition {name!r} wrote no files")
        write_json_atomic(stage / ADDITION_MANIFEST, {
            "format": ADDITION_FORMAT, "name": name, "version": int(version),
            "cache_config_hash": manifest["config_hash"], "meta": meta, "files": files})
        old = root / f".old-{name}.{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(stage, final)
        fsync_dir(root)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def load_addition(cache_dir: str | Path, name: str, version: int | None = None,
                  verify: bool = True) -> Addition:
    """Read and check one addition of a cache.

    Args:
        cache_dir: the cache.
        name: the addition's name.
        version: the schema version the caller reads (None: any).
        verify: also check every file's sha256 (sizes are always checked).

    Raises:
        CacheError: missing, of another cache or version, malformed, or altered files.
    """
    cache_dir = as_path(cache_dir)
    directory = addition_dir(cache_dir, name)
    mpath = directory / ADDITION_MANIFEST
    if not mpath.is_file() or mpath.is_symlink():
        raise CacheError(f"cache {cache_dir} has no {name!r} addition ({mpath} is missing); "
                         f"build it first")
    doc = read_untrusted_json(mpath, cache_dir, "an addition manifest", MAX_MANIFEST_BYTES)
    want = {"format": str, "name": str, "version": int, "cache_config_hash": str, "meta": dict,
            "files": dict}
    for key, typ in want.items():
        if not isinstance(doc, dict) or not isinstance(doc.get(key), typ):
            raise SchemaError(f"{mpath}: field {key!r} is missing or not a {typ.__name__}")
    if doc["format"] != ADDITION_FORMAT or doc["name"] != name:
        raise SchemaError(f"{mpath} is not the {name!r} addition of a videocfr cache")
    if version is not None and doc["version"] != version:
        raise CacheError(f"{mpath}: addition version {doc['version']} found, this reader reads "
                         f"version {version}; rebuild the addition")
    cache_hash = load_manifest(cache_dir)["config_hash"]
    if doc["cache_config_hash"] != cache_hash:
        raise CacheError(f"addition {name!r} was built for a cache with config hash "
                         f"{doc['cache_config_hash']}, this cache has {cache_hash}; rebuild it")
    for file, entry in doc["files"].items():
        _check_name(file, f"{mpath}: file")
        p = directory / file
        if (not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int)
                or not isinstance(entry.get("sha256"), str)):
            raise SchemaError(f"{mpath}: entry of {file!r} needs integer bytes and a sha256")
        if p.is_symlink() or not p.is_file():
            raise CacheError(f"addition {name!r}: {file} is missing or not a plain file")
        if p.stat().st_size != entry["bytes"]:
            raise CacheError(f"addition {name!r}: {file} has {p.stat().st_size} bytes, "
                             f"{ADDITION_MANIFEST} says {entry['bytes']}")
        if verify and sha256_file(p) != entry["sha256"]:
            raise CacheError(f"addition {name!r}: {file} does not match its sha256")
    return Addition(name=name, version=doc["version"], meta=doc["meta"], files=doc["files"],
                    directory=directory)


def verify_additions(cache_dir: str | Path) -> list[tuple[str, str]]:
    """Check every addition of a cache; returns (where, reason) for each problem."""
    problems = []
    for name in list_additions(cache_dir):
        try:
            load_addition(cache_dir, name, verify=True)
        except (CacheError, KeyError) as err:
            problems.append((f"{ADDITIONS_DIR}/{name}", str(err)))
    return problems
