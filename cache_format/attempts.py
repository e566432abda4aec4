"""Attempts of one shard job: claims, liveness and garbage collection, without locks.

A shard job may run twice at once (a Slurm requeue while the first attempt still runs, a Ray
retry), on shared filesystems where `flock` is not to be trusted (NFS, Lustre). So no attempt
ever deletes or overwrites a file another attempt may rely on; the only operations that decide
anything are `open(O_CREAT | O_EXCL)` on a name unique to the attempt and `rename` onto a final
name, both atomic on every POSIX filesystem and on NFS v3+/Lustre.

* An attempt has a random token. Before writing anything it writes its claim
  `shards/.attempt-JOB.TOKEN.json` (host, pid, pid start time) and keeps its mtime fresh (a
  heartbeat). Its temporary files end in `.TOKEN`.
* A part is named by its content (`JOB-PART-SHA12.h5`): two attempts that compute the same bytes
  write the same name, and a rename of equal bytes over equal bytes changes nothing a reader can
  see; different bytes get different names, so nothing is overwritten. The attempt adds a part's
  name to its claim BEFORE renaming the part into place.
* The job marker (`shards/job-JOB.json`, renamed into place) is the single commit point.
* Garbage collection (after a commit, after an abort, in `finalize`) deletes a job's file only
  when no live claim, the current marker nor `manifest.json` names it. It lists the files first,
  then reads the claims, then the marker, then the manifest: a file that exists at listing time
  was announced in its claim before it existed, so a live attempt's files are always seen.

A claim is live when its process runs (same host and pid namespace: the pid exists, with the
same start time, and is no zombie) or, seen from another host, when its mtime is younger than
`stale_after_s()` (VIDEOCFR_ATTEMPT_STALE_S, default 900 s; clocks must agree within that).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path

from . import schema
from .io import StorageError, json_bytes, write_bytes_atomic
from .markers import marker_name

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_ENV = "VIDEOCFR_ATTEMPT_STALE_S"
_TOKEN = r"[0-9a-f]{12}"
_PART_RE = re.compile(r"^(\d{5})-of-(\d{5})-\d{4}(?:-[0-9a-f]+)?\.h5$")
_TMP_RE = re.compile(rf"^\.tmp-(?:job-|attempt-)?(\d{{5}})-of-(\d{{5}})\S*\.({_TOKEN})$")
_CLAIM_RE = re.compile(rf"^\.attempt-(\d{{5}})-of-(\d{{5}})\.({_TOKEN})\.json$")


def stale_after_s() -> float:
    """Seconds after which a claim from another host with no heartbeat counts as dead."""
    return float(os.environ.get(STALE_ENV, "900"))


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def host_id() -> str:
    """This host and pid namespace: pids are comparable only between equal host ids."""
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = ""
    return f"{socket.gethostname()}/{_read('/proc/sys/kernel/random/boot_id')}/{ns}"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process from /proc, None where unreadable."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[0], fields[19]


def pid_alive(pid: int, start: str | None) -> bool:
    """True when process `pid` runs (not a zombie) and, where known, started at `start`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    return state not in ("Z", "X") and (start is None or started == start)


def claim_name(job_index: int, num_jobs: int, token: str) -> str:
    return f".attempt-{job_index:05d}-of-{num_jobs:05d}.{token}.json"


class Attempt:
    """This process's attempt at one shard job: its claim, heartbeat and temporary names."""

    def __init__(self, shard_dir: Path, job_index: int, num_jobs: int):
        self.shard_dir = Path(shard_dir)
        self.job_index, self.num_jobs = job_index, num_jobs
        self.token = secrets.token_hex(6)
        self.claim = self.shard_dir / claim_name(job_index, num_jobs, self.token)
        self.files: list[str] = []  # part names announced, in order
        stat = _proc_stat(os.getpid())
        self._info = {"host": host_id(), "pid": os.getpid(),
                      "pid_start": stat[1] if stat else None, "token": self.token,
                      "job_index": job_index, "num_jobs": num_jobs, "started": time.time()}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def tmp(self, name: str) -> Path:
        """The temporary path this attempt writes `name` under (`.tmp-NAME.TOKEN`)."""
        return self.shard_dir / f".tmp-{name}.{self.token}"

    def _write_claim(self) -> None:
        write_bytes_atomic(self.claim, json_bytes({**self._info, "files": self.files}),
                           self.tmp(self.claim.name[1:]))

    def start(self) -> None:
        """Write the claim and start the heartbeat.

        Raises:
            StorageError: the claim cannot be written.
        """
        self._write_claim()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                      name=f"videocfr-attempt-{self.token}")
        self._beat.start()

    def announce(self, name: str) -> None:
        """Record part `name` in the claim; call before renaming the part into place."""
        self.files.append(name)
        self._write_claim()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.claim)
            except FileNotFoundError:  # judged dead by another host: say again that we live
                log.warning("claim %s vanished; writing it again", self.claim)
                try:
                    self._write_claim()
                except StorageError as err:
                    log.warning("%s", err)
            except OSError as err:
                log.warning("heartbeat on %s failed: %s", self.claim, err)

    def end(self) -> None:
        """Stop the heartbeat, remove this attempt's temporary files and its claim."""
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=5)
        try:
            for p in self.shard_dir.glob(f".tmp-*.{self.token}"):
                p.unlink(missing_ok=True)
            self.claim.unlink(missing_ok=True)
        except OSError as err:
            log.warning("could not remove the temporary files of attempt %s: %s", self.token,
                        err)


def _claim_live(path: Path, now: float, here: str) -> tuple[bool, list[str]]:
    """(live, announced files) of one claim file."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        files = [str(f) for f in info.get("files", [])]
    except FileNotFoundError:
        return False, []
    except (OSError, ValueError, AttributeError):
        info, files = {}, []
    if info.get("host") == here and isinstance(info.get("pid"), int):
        return pid_alive(info["pid"], info.get("pid_start")), files
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False, []
    return age < stale_after_s(), files


def _named(path: Path) -> set[str]:
    """Shard file names a marker or manifest names (empty when absent or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.get("files", data.get("shards", []))
        return {Path(str(e["path"])).name for e in entries}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set()


def collect_garbage(cache_dir: str | Path, num_jobs: int, jobs: set[int] | None = None) -> int:
    """Delete the parts, temporary files and claims of dead or superseded attempts.

    Args:
        cache_dir: the cache directory.
        num_jobs: the sharding.
        jobs: the job indices to clean (default: all).

    Returns:
        How many files were removed.
    """
    cache_dir = Path(cache_dir)
    shard_dir = cache_dir / schema.SHARD_DIR
    try:
        names = os.listdir(shard_dir)  # 1. list
    except OSError:
        return 0
    now, here = time.time(), host_id()

    def job_of(m: re.Match | None) -> int | None:
        if m is None or int(m.group(2)) != num_jobs:
            return None
        i = int(m.group(1))
        return i if jobs is None or i in jobs else None

    parts, tmps, claims = [], [], []
    for name in names:
        if (i := job_of(_PART_RE.match(name))) is not None:
            parts.append((i, name))
        elif (m := _TMP_RE.match(name)) and job_of(m) is not None:
            tmps.append((m.group(3), name))
        elif (m := _CLAIM_RE.match(name)) and job_of(m) is not None:
            claims.append((m.group(3), name))
    live, keep = set(), set()
    for token, name in claims:  # 2. claims
        alive, files = _claim_live(shard_dir / name, now, here)
        if alive:
            live.add(token)
            keep.update(files)
    for i in {i for i, _ in parts}:  # 3. markers
        keep |= _named(shard_dir / marker_name(i, num_jobs))
    keep |= _named(cache_dir / schema.MANIFEST_NAME)  # 4. the manifest
    doomed = ([n for _, n in parts if n not in keep] + [n for t, n in tmps if t not in live]
              + [n for t, n in claims if t not in live])
    removed = 0
    for name in doomed:
        try:
            (shard_dir / name).unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("could not remove %s: %s", shard_dir / name, err)
    if removed:
        log.debug("removed %d files of dead or superseded attempts from %s", removed, shard_dir)
    return removed
