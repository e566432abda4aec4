"""Untrusted shard bytes are parsed by HDF5 in a child process first, then opened in process.

A shard from another team may hold metadata on which HDF5's C library loops forever or crashes.
So before a reader opens a shard whose bytes it has not checked, this module:

1. **pins the bytes**: opens the file once (`os.open`, read-only) and keeps that descriptor; the
   sha256 of the inode behind it is computed in this process (a remote shard is first copied
   whole into a private, already unlinked temporary file, hashed on the way);
2. **checks them in a child** (`check_child.py`, a fresh `sys.executable`, never a fork of a
   process that holds HDF5 state): the structural check and a read of every dataset ("read"),
   plus verify's value checks ("values"); the child inherits the descriptor, caps its address
   space with RLIMIT_AS and is killed after a time limit. Shards are checked in parallel;
3. **opens exactly those bytes**: h5py opens /proc/self/fd/<fd> (the pinned inode, whatever the
   file's name points at by then), read-only and without HDF5 file locking, and the file's
   size, mtime and ctime must still be the ones hashed.

A child that runs out of time, dies by a signal or exhausts its memory is a `StructureError` of
kind "hang", "crash" or "memory" naming the shard; the calling process goes on.

Paid once: a pass is remembered for (sha256, level, config hash, D) in the process, and in a
local trust record (one small JSON file per pass, plus file identity -> sha256 entries so a later
process need not re-hash an unchanged file). Settings (environment):

    VIDEOCFR_CHECK_TIMEOUT  seconds per shard check (default 120)
    VIDEOCFR_CHECK_MEMORY   address-space limit of a check, bytes or 512M/4G (default 4G)
    VIDEOCFR_CHECK_WORKERS  shards checked at once (default: CPU count, at most 8)
    VIDEOCFR_TRUST_DIR      the trust record directory (default ~/.cache/videocfr/trusted-shards,
                            under $XDG_CACHE_HOME when set); "off" keeps passes in process only.
                            Clearing it (rm -r) makes every shard be checked again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py

from .schema import CacheError, SchemaError
from .storage import RemotePath
from .structure import StructureError

CHECK_VERSION = 4  # bump when a check refuses more: older passes are then ignored
_PROC_FD = Path("/proc/self/fd")
_SPOOL_BLOCK = 1 << 22


def _bytes(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


@dataclass(frozen=True)
class Limits:
    """Limits of one shard check.

    Attributes:
        timeout_s: wall-clock seconds before the child is killed (kind "hang").
        memory_bytes: RLIMIT_AS of the child (kind "memory" when exceeded); 0: no limit.
        workers: shard checks run at once.
    """

    timeout_s: float = 120.0
    memory_bytes: int = 4 << 30
    workers: int = max(1, min(8, os.cpu_count() or 1))

    @classmethod
    def from_env(cls) -> Limits:
        env, base = os.environ, cls()
        try:
            return cls(float(env.get("VIDEOCFR_CHECK_TIMEOUT", base.timeout_s)),
                       _bytes(env.get("VIDEOCFR_CHECK_MEMORY", str(base.memory_bytes))),
                       int(env.get("VIDEOCFR_CHECK_WORKERS", base.workers)))
        except ValueError as err:
            raise CacheError(f"VIDEOCFR_CHECK_TIMEOUT / _MEMORY / _WORKERS: {err} (seconds, "
                             f"bytes like 4G, a count)") from None


# -- pinned bytes ---------------------------------------------------------------------------
def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Pinned:
    """An open descriptor of a shard's bytes, with their sha256.

    Attributes:
        fd: the descriptor (read-only; inherited by the check's child).
        sha256: hex digest of the bytes behind `fd`.
        where: the shard's name in errors.
        size: bytes.
    """

    def __init__(self, fd: int, identity: tuple, sha256: str, where: str):
        self.fd, self.identity, self.sha256, self.where = fd, identity, sha256, where
        self.size = identity[2]

    def still_same(self) -> None:
        """CacheError when the pinned file was changed in place (a cache is immutable).

        ctime is not compared here: unlinking or renaming over the pinned file (a rerun
        replacing it) changes the inode's ctime, not its bytes, and the descriptor still reads
        the pinned bytes.
        """
        now = _identity(os.fstat(self.fd))
        if now[:4] != self.identity[:4]:
            raise CacheError(f"{self.where}: the shard changed while it was being checked "
                             f"(size/mtime/ctime); a cache must not be written while read")

    def open_h5(self) -> h5py.File:
        """The pinned bytes opened by h5py in this process: read-only, no file locking.

        Through /proc/self/fd/<fd> (HDF5's own POSIX driver on the pinned inode); an inode
        with no name left (a remote shard's spool, a shard unlinked or renamed over since it
        was pinned) is read through a Python file object on the descriptor instead.
        """
        self.still_same()
        if os.fstat(self.fd).st_nlink == 0 or not _PROC_FD.is_dir():
            fileobj = os.fdopen(os.dup(self.fd), "rb")
            try:
                return h5py.File(fileobj, "r", locking=False)
            except BaseException:
                fileobj.close()
                raise
        f = h5py.File(f"{_PROC_FD}/{self.fd}", "r", locking=False)
        handle = f.id.get_vfd_handle()
        if isinstance(handle, int) and _identity(os.fstat(handle))[:2] != self.identity[:2]:
            f.close()
            raise CacheError(f"{self.where}: HDF5 opened another file than the one checked")
        return f

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_SHA_BY_IDENTITY: dict[tuple, str] = {}
_PASSED: dict[tuple, dict] = {}
_REFUSED: dict[tuple, StructureError] = {}
_LOCK = threading.Lock()


def _hash_fd(fd: int) -> str:
    """sha256 of all the bytes behind `fd` (from offset 0, whatever the current offset)."""
    digest, offset = hashlib.sha256(), 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while n := os.preadv(fd, [buf], offset):
        digest.update(view[:n])  # large updates release the GIL: shards hash in parallel
        offset += n
    return digest.hexdigest()


def pin(path: Path | RemotePath, where: str) -> Pinned:
    """Open `path` once and hash the bytes behind the descriptor (a URL: copied locally first).

    Raises:
        CacheError: not a regular file, or unreadable.
    """
    if isinstance(path, RemotePath):
        return _pin_remote(path, where)
    try:
        # O_NONBLOCK: a FIFO named like a shard must not block the open (it is refused below)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        raise CacheError(f"{where}: cannot open the shard ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheError(f"{where}: not a regular file")
        ident = _identity(st)
        key = (*ident, str(Path(path).resolve()))
        sha = _SHA_BY_IDENTITY.get(key) or record().sha_for(key)
        if sha is None:
            sha = _hash_fd(fd)
            if _identity(os.fstat(fd))[:4] != ident[:4]:
                raise CacheError(f"{where}: the shard changed while it was hashed")
            record().remember_identity(key, sha)
        _SHA_BY_IDENTITY[key] = sha
        return Pinned(fd, ident, sha, where)
    except BaseException:
        os.close(fd)
        raise


def _pin_remote(path: RemotePath, where: str) -> Pinned:
    """A remote shard copied whole into an unlinked temporary file (the bytes then checked)."""
    digest = hashlib.sha256()
    spool = tempfile.TemporaryFile(prefix="videocfr-shard-")
    try:
        with path.open("rb") as src:
            while block := path._call("read", src.read, _SPOOL_BLOCK):
                digest.update(block)
                spool.write(block)
        spool.flush()
        fd = os.dup(spool.fileno())
    finally:
        spool.close()
    os.set_inheritable(fd, False)
    return Pinned(fd, _identity(os.fstat(fd)), digest.hexdigest(), where)


# -- the child ------------------------------------------------------------------------------
def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"  # thread pools reserve address space the limit would count
    env["HDF5_USE_FILE_LOCKING"] = "FALSE"
    return env


def child_command(request: dict) -> list[str]:
    """The command line of one check: a fresh interpreter running check_child.py."""
    return [sys.executable, "-m", "videocfr.cache_format.check_child", json.dumps(request)]


def _run_child(p: Pinned, level: str, config_hash: str | None, embed_dim: int | None,
               limits: Limits) -> dict:
    request = {"fd": p.fd, "level": level, "where": p.where, "config_hash": config_hash,
               "embed_dim": embed_dim, "memory": limits.memory_bytes}
    cmd = child_command(request)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=(p.fd,), env=_child_env())
    try:
        out, err = proc.communicate(timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise StructureError(p.where, "hang", "/", f"the check did not finish within "
                             f"{limits.timeout_s:g} s (HDF5 can loop forever on malformed "
                             f"metadata); if the storage is only slow, raise "
                             f"VIDEOCFR_CHECK_TIMEOUT") from None
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if proc.returncode < 0:
        sig = -proc.returncode
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        if sig == signal.SIGKILL:
            raise StructureError(p.where, "memory", "/", "the check was killed (SIGKILL, most "
                                 "likely the out-of-memory killer); lower its memory with "
                                 "VIDEOCFR_CHECK_MEMORY")
        raise StructureError(p.where, "crash", "/", f"the check died by signal {name}: HDF5 "
                             f"crashed on malformed bytes (or, rarer, the check's "
                             f"{limits.memory_bytes / 2**30:.3g} GiB address-space limit, "
                             f"VIDEOCFR_CHECK_MEMORY, was too low to start)")
    try:
        answer = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        if b"MemoryError" in err:
            raise StructureError(p.where, "memory", "/", f"the check ran out of its "
                                 f"{limits.memory_bytes / 2**30:.3g} GiB of address space "
                                 f"(VIDEOCFR_CHECK_MEMORY)") from None
        raise StructureError(p.where, "crash", "/", f"the check exited with status "
                             f"{proc.returncode} and no answer ({tail[0][:200]})") from None
    status = answer.get("status")
    if status == "ok":
        return answer
    if status == "structure":
        raise StructureError(p.where, answer["kind"], answer["path"], answer["detail"])
    if status == "memory":
        raise StructureError(p.where, "memory", "/", f"the check ran out of its "
                             f"{limits.memory_bytes / 2**30:.3g} GiB of address space "
                             f"({answer['message'][:200]}); raise VIDEOCFR_CHECK_MEMORY only "
                             f"for a shard you have reason to trust")
    if status == "unreadable":
        raise SchemaError(f"{p.where} is not a readable HDF5 shard: {answer['message']}")
    raise SchemaError(f"{p.where}: {answer.get('message', answer)}")


def check_pinned(p: Pinned, level: str, config_hash: str | None, embed_dim: int | None,
                 limits: Limits | None = None, fresh: bool = False) -> dict:
    """The answer of the check of `p` at `level`, from memory or from a child.

    Args:
        level: "read" (structure + every dataset read) or "values" (+ verify's value checks;
            a "values" pass also answers "read").
        fresh: ignore remembered passes (verify).

    Returns:
        {"status": "ok", "rows": {table: rows}, "failed": failed videos or None}.

    Raises:
        StructureError (kinds of structure.KINDS, including hang / crash / memory),
        SchemaError / CacheError.
    """
    keys = [(p.sha256, lv, config_hash, embed_dim) for lv in
            (("values",) if level == "values" else ("read", "values"))]
    if not fresh:
        for key in keys:
            if key in _REFUSED:  # a refusal is not paid twice in a process
                raise _REFUSED[key]
            answer = _PASSED.get(key) or record().passed(key)
            if answer is not None:
                with _LOCK:
                    _PASSED[key] = answer
                return answer
    try:
        answer = _run_child(p, level, config_hash, embed_dim, limits or Limits.from_env())
    except CacheError as err:  # deterministic for these bytes: not paid twice in a process
        if isinstance(err, StructureError) and err.kind in ("hang", "crash", "memory"):
            with _LOCK:
                _REFUSED[keys[0]] = err
                if level == "values":  # the child reads everything before the value checks
                    _REFUSED[keys[0][:1] + ("read",) + keys[0][2:]] = err
        elif not fresh:
            with _LOCK:
                _REFUSED[keys[0]] = err
        raise
    p.still_same()
    with _LOCK:
        _PASSED[keys[0]] = answer
    record().remember_pass(keys[0], answer)
    return answer


class DigestMismatch(CacheError):
    """The pinned bytes' sha256 is not the one expected (the manifest's)."""

    def __init__(self, where: str, found: str, expected: str):
        self.where, self.found, self.expected = where, found, expected
        super().__init__(f"{where}: sha256 {found} does not match the manifest's {expected}")


def check_paths(paths: list, wheres: list[str], level: str, config_hash: str | None,
                embed_dim: int | None, limits: Limits | None = None, fresh: bool = False,
                keep: bool = True, expect_sha256: list[str] | None = None) -> list:
    """Pin and check many shards in parallel.

    Args:
        expect_sha256: per shard, the digest its bytes must have (else DigestMismatch, and the
            shard is not checked further).

    Returns:
        Per shard, (Pinned, answer) or the exception its check raised (in input order). With
        keep=False every descriptor is closed and the Pinned's fd is -1.
    """
    limits = limits or Limits.from_env()

    def one(i: int):
        p = None
        try:
            p = pin(paths[i], wheres[i])
            if expect_sha256 is not None and p.sha256 != expect_sha256[i]:
                raise DigestMismatch(wheres[i], p.sha256, expect_sha256[i])
            answer = check_pinned(p, level, config_hash, embed_dim, limits, fresh)
            if not keep:
                p.close()
            return p, answer
        except (CacheError, OSError) as err:
            if p is not None:
                p.close()
            return err

    if len(paths) <= 1 or limits.workers <= 1:
        return [one(i) for i in range(len(paths))]
    with ThreadPoolExecutor(max_workers=min(limits.workers, len(paths))) as pool:
        return list(pool.map(one, range(len(paths))))


def open_checked(paths: list, wheres: list[str], config_hash: str | None,
                 embed_dim: int | None, limits: Limits | None = None) -> list[h5py.File]:
    """Shards checked ("read" level, in parallel) and then opened in process from their pins.

    Raises:
        The first shard's error (in order); no file is left open then.
    """
    results = check_paths(paths, wheres, "read", config_hash, embed_dim, limits)
    files: list[h5py.File] = []
    try:
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for p, _ in results:
            files.append(p.open_h5())
    except BaseException:
        for f in files:
            f.close()
        raise
    finally:
        for result in results:
            if not isinstance(result, BaseException):
                result[0].close()
    return files


def forget() -> None:
    """Drop the passes remembered in this process (tests, long-lived services)."""
    _PASSED.clear()
    _REFUSED.clear()
    _SHA_BY_IDENTITY.clear()


# -- the trust record -----------------------------------------------------------------------
class TrustRecord:
    """Passed checks on disk: one JSON file per pass, written atomically, no file locks.

    Args:
        directory: where the files live; None keeps nothing.
    """

    def __init__(self, directory: Path | None):
        self.directory = directory
        self._warned = False

    @staticmethod
    def _name(kind: str, key: tuple) -> str:
        return f"{kind}-{hashlib.sha256(repr(key).encode()).hexdigest()[:32]}.json"

    def _read(self, name: str) -> dict | None:
        if self.directory is None:
            return None
        try:
            data = json.loads((self.directory / name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("check_version") == CHECK_VERSION \
            else None

    def _write(self, name: str, data: dict) -> None:
        if self.directory is None:
            return
        from .io import write_bytes_atomic

        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_bytes_atomic(self.directory / name, json.dumps(data).encode(),
                               tmp=self.directory / f".tmp-{name}.{os.getpid()}."
                                                    f"{threading.get_ident()}",
                               check_space=False)
        except OSError as err:
            if not self._warned:
                self._warned = True
                print(f"videocfr: cannot write the trust record in {self.directory} ({err}); "
                      f"checks are remembered in this process only (VIDEOCFR_TRUST_DIR)",
                      file=sys.stderr)

    def sha_for(self, identity_key: tuple) -> str | None:
        data = self._read(self._name("id", identity_key))
        if data and data.get("identity") == list(identity_key):
            return data.get("sha256")
        return None

    def remember_identity(self, identity_key: tuple, sha: str) -> None:
        self._write(self._name("id", identity_key), {"check_version": CHECK_VERSION,
                                                    "identity": list(identity_key),
                                                    "sha256": sha})

    def passed(self, key: tuple) -> dict | None:
        data = self._read(self._name(f"pass-{key[0][:16]}", key))
        if data and data.get("key") == list(key) and data.get("answer", {}).get("status") == "ok":
            return data["answer"]
        return None

    def remember_pass(self, key: tuple, answer: dict) -> None:
        self._write(self._name(f"pass-{key[0][:16]}", key),
                    {"check_version": CHECK_VERSION, "key": list(key), "answer": answer,
                     "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def trust_dir() -> Path | None:
    """The trust record directory from VIDEOCFR_TRUST_DIR (None when "off")."""
    value = os.environ.get("VIDEOCFR_TRUST_DIR")
    if value is not None:
        return None if value.strip().lower() in ("", "off", "none", "0") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "videocfr" / "trusted-shards"


_RECORDS: dict[Path | None, TrustRecord] = {}


def record() -> TrustRecord:
    """The trust record of the current VIDEOCFR_TRUST_DIR."""
    where = trust_dir()
    if where not in _RECORDS:
        _RECORDS[where] = TrustRecord(where)
    return _RECORDS[where]
