"""Job markers and part names: a marker is the commit point of one shard job, trusted only while
every file it names is there with the size and sha256 it records."""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import schema
from .io import sha256_file


def slurm_defaults(env: dict | None = None) -> tuple[int | None, int | None]:
    """(num_shards, shard_index) from a SLURM array task's environment, (None, None) outside."""
    env = os.environ if env is None else env
    count, task = env.get("SLURM_ARRAY_TASK_COUNT"), env.get("SLURM_ARRAY_TASK_ID")
    if count is None or task is None:
        return None, None
    first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    return int(count), int(task) - first


def shard_selection(num_shards: int | None, shard_index: int | None,
                    env: dict | None = None) -> tuple[int, int | None]:
    """(N jobs, the one job to run or None for all) of a shard-parallel command.

    `--num-shards` / `--shard-index` win; unset, they come from a SLURM array task
    (slurm_defaults). SLURM's task id is used only when N is SLURM's own count: an explicit
    --num-shards of another N with no --shard-index runs every job.

    Raises:
        ValueError: N < 1 or the index outside [0, N), saying which values are valid.
    """
    slurm_n, slurm_i = slurm_defaults(env)
    num = num_shards if num_shards is not None else (slurm_n or 1)
    index = shard_index if shard_index is not None else (
        slurm_i if num_shards is None or num_shards == slurm_n else None)
    if num < 1:
        raise ValueError(f"--num-shards must be >= 1, got {num}")
    if index is not None and not 0 <= index < num:
        raise ValueError(f"--shard-index {index} outside [0, {num}); use 0..{num - 1}")
    return num, index


def part_name(job_index: int, num_jobs: int, part: int, sha256: str = "") -> str:
    """A part's file name; with its content's sha256, the first 12 hex digits join the name."""
    tail = f"-{sha256[:12]}" if sha256 else ""
    return f"{job_index:05d}-of-{num_jobs:05d}-{part:04d}{tail}.h5"


def marker_name(job_index: int, num_jobs: int) -> str:
    return f"job-{job_index:05d}-of-{num_jobs:05d}.json"


class JobsUnfinished(schema.CacheError):
    """Some shard jobs have no trusted marker: run them (again), then finalize."""


def read_markers(shard_dir: Path) -> list[dict]:
    markers = []
    for path in sorted(shard_dir.glob("job-*-of-*.json")):
        try:
            with open(path, encoding="utf-8") as f:
                m = json.load(f)
            if not isinstance(m, dict) or not isinstance(m.get("files"), list):
                raise ValueError("not a job marker")
            for key in ("job_index", "num_jobs", "config_hash"):
                m[key]  # noqa: B018  (KeyError when absent)
        except (OSError, ValueError, KeyError) as err:
            raise schema.CacheError(f"{path} is unreadable ({type(err).__name__}: {err}); "
                                    f"delete it and rerun that job") from None
        markers.append(m)
    return markers


_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, per process


def remember_sha256(path: Path, sha256: str) -> None:
    """Record the sha256 of a file this process has just written (no rehash when checked)."""
    st = path.stat()
    _VERIFIED[(str(path), st.st_size, st.st_mtime_ns, st.st_ino)] = sha256


def marker_problem(cache_dir: str | Path, marker: dict, full: bool = True) -> str | None:
    """None when every file `marker` names exists with its recorded size and sha256, else why.

    Args:
        cache_dir: the cache directory.
        marker: the job marker (parsed JSON).
        full: also compare sha256s (else sizes only: a cheap look at many jobs). A file's
            sha256 is computed once per process for an unchanged (size, mtime, inode).
    """
    cache_dir = Path(cache_dir)
    for entry in marker.get("files", []):
        try:
            rel, size, digest = str(entry["path"]), int(entry["bytes"]), str(entry["sha256"])
        except (TypeError, KeyError, ValueError):
            return f"a file entry is malformed ({entry!r})"
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or parts[:1] != (schema.SHARD_DIR,):
            return f"file path {rel!r} is not under {schema.SHARD_DIR}/"
        path = cache_dir / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            return f"{rel} is missing"
        except OSError as err:
            return f"{rel} cannot be read ({err.strerror})"
        if st.st_size != size:
            return f"{rel} has {st.st_size} bytes, the marker records {size}"
        if not full:
            continue
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in _VERIFIED:
            try:
                _VERIFIED[key] = sha256_file(path)
            except OSError as err:
                return f"{rel} cannot be read ({err.strerror})"
        if _VERIFIED[key] != digest:
            return f"{rel} does not match the sha256 its marker records"
    return None


def job_state(cache_dir: str | Path, job_index: int, num_jobs: int, full: bool = True
              ) -> tuple[str, str]:
    """("done", ""), ("absent", "") or ("invalid", why) for job `job_index`'s marker.

    `full=False` compares file sizes only (see `marker_problem`).
    """
    marker = Path(cache_dir) / schema.SHARD_DIR / marker_name(job_index, num_jobs)
    try:
        with open(marker, encoding="utf-8") as f:
            m = json.load(f)
    except FileNotFoundError:
        return "absent", ""
    except (OSError, ValueError) as err:
        return "invalid", f"{marker.name} is unreadable ({err})"
    problem = marker_problem(cache_dir, m, full) if isinstance(m, dict) else "not a job marker"
    return ("invalid", problem) if problem else ("done", "")
