"""Atomic file writes and hashing shared by the writer, merge and tools.

Every write goes through `write_bytes_atomic`: a temporary sibling is written with plain
`os.write`, fsynced, closed and renamed onto the final name. Any OSError on the way (a full disk,
the file-size limit, an I/O error, a read-only filesystem) removes the temporary file and is
raised as a `StorageError` whose message names the path and the cause in one line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

# what to do about each write failure (the message's tail)
_HINTS = {
    errno.ENOSPC: "the disk is full: free space or write the cache elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space or write the cache elsewhere",
    errno.EFBIG: "the file-size limit (ulimit -f) is below a shard's size: raise it, or lower "
                 "shards.max_bytes",
    errno.EROFS: "the filesystem is read-only: write the cache elsewhere",
    errno.EACCES: "no write permission: fix the permissions or write the cache elsewhere",
    errno.EPERM: "no write permission: fix the permissions or write the cache elsewhere",
    errno.EIO: "the storage reported an I/O error: check it (dmesg), then rerun",
    errno.ENOTDIR: "a path component is a file, not a directory: choose another --out",
    errno.EEXIST: "a file is in the way of a directory: choose another --out",
}


class StorageError(OSError):
    """A cache file could not be written (full disk, file-size limit, I/O error, read-only...).

    `str()` is one line: the path, the cause (strerror and errno name) and what to do.
    """

    def __init__(self, path: str | Path, err: OSError | int, action: str = "write",
                 detail: str = ""):
        code = err if isinstance(err, int) else (err.errno or errno.EIO)
        super().__init__(code, os.strerror(code), str(path))
        self.path = str(path)
        self.action = action
        self.detail = detail

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, str(self.errno))
        hint = _HINTS.get(self.errno, "check the storage, then rerun")
        extra = f"; {self.detail}" if self.detail else ""
        return f"cannot {self.action} {self.path}: {self.strerror} ({name}){extra}; {hint}"


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


def tmp_path_for(final: Path, tag: str | None = None) -> Path:
    """A temporary sibling of `final`: hidden, unique to this process (or `tag`), ignored by
    readers."""
    return final.with_name(f".tmp-{final.name}.{tag or os.getpid()}")


def free_bytes(directory: str | Path) -> int:
    """Bytes available to this user in `directory`'s filesystem."""
    return shutil.disk_usage(directory).free


def write_bytes_atomic(final: str | Path, data: bytes | memoryview, tmp: Path | None = None,
                       check_space: bool = True) -> None:
    """Write `data` so that `final` is either absent/old or whole new.

    Args:
        final: the final path.
        data: the bytes.
        tmp: the temporary sibling to write first (default `tmp_path_for(final)`); created
            exclusively, removed on any failure.
        check_space: refuse up front (ENOSPC) when the filesystem reports less free space than
            `len(data)`, before writing anything.

    Raises:
        StorageError: any OSError while writing, syncing or renaming; the temporary file is gone.
    """
    final = Path(final)
    tmp = tmp_path_for(final) if tmp is None else tmp
    view = memoryview(data)
    if check_space and len(view):
        try:
            free = free_bytes(final.parent)
        except OSError as err:
            raise StorageError(final.parent, err, "check free space in") from None
        if free < len(view):
            raise StorageError(final, errno.ENOSPC, detail=f"needs {len(view)} bytes, "
                               f"{free} free")
    fd = -1
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        created = True
        done = 0
        while done < len(view):  # a short write is followed by the call that reports why
            done += os.write(fd, view[done:done + (1 << 24)])
        os.fsync(fd)
        os.close(fd)  # NFS reports a full disk at close: checked, not ignored
        fd = -1
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as err:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        removed = ""
        if created:
            try:
                tmp.unlink(missing_ok=True)
                removed = "partial file removed"
            except OSError as gone:
                removed = f"partial file {tmp} could not be removed ({gone.strerror})"
        raise StorageError(final, err, detail=removed) from None


def commit_file(tmp: Path, final: Path) -> None:
    """fsync `tmp`, rename it onto `final`, fsync the directory: `final` appears only whole.

    Raises:
        StorageError: the sync or rename failed (`tmp` is removed).
    """
    try:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise StorageError(final, err) from None


def json_bytes(obj: dict) -> bytes:
    """JSON as the cache writes it: sorted keys, 2-space indent, UTF-8, no NaN, final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
            + "\n").encode("utf-8")


def write_json_atomic(path: str | Path, obj: dict, tmp: Path | None = None) -> None:
    """Write JSON (sorted keys, 2-space indent) so that `path` is either old or whole new.

    Raises:
        StorageError: the write failed (nothing is left behind).
    """
    write_bytes_atomic(path, json_bytes(obj), tmp)


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
