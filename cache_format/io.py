"""Atomic file writes and hashing shared by the writer, merge and tools."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    from .storage import as_path  # a RemotePath too (shards of a remote cache)

    digest = hashlib.sha256()
    with as_path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path_for(final: Path) -> Path:
    """A temporary sibling of `final`: hidden, unique to this process, ignored by readers."""
    return final.with_name(f".tmp-{final.name}.{os.getpid()}")


def commit_file(tmp: Path, final: Path) -> None:
    """fsync `tmp`, rename it onto `final`, fsync the directory: `final` appears only whole."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_json_atomic(path: str | Path, obj: dict) -> None:
    """Write JSON (sorted keys, 2-space indent) so that `path` is either old or whole new."""
    final = Path(path)
    tmp = tmp_path_for(final)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        f.write("\n")
    commit_file(tmp, final)


def remove_stale_tmp(directory: Path, prefixes: tuple[str, ...] = ("",)) -> int:
    """Delete temp files that killed writers left for final names starting with `prefixes`.

    Only name the files the caller owns: other jobs may be writing beside it.

    Returns:
        How many files were removed.
    """
    removed = 0
    if directory.is_dir():
        for p in directory.glob(".tmp-*"):
            if not p.name[len(".tmp-"):].startswith(prefixes):
                continue
            p.unlink(missing_ok=True)
            removed += 1
    return removed
