"""`videocfr cache verify`: checksums, schema, shapes, dtypes, sums and finiteness.

The shard checks run in child processes (cache_format/sandbox.py): HDF5 never parses an
unchecked shard in the verifying process, and a shard that hangs or crashes it is one problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import schema
from .additions import verify_additions
from .fusion import QFRAME_ARRAYS, SALIENCES
from .manifest import load_manifest, safe_member_path
from .reader import Cache
from .sandbox import DigestMismatch, Limits, check_paths
from .storage import as_path
from .structure import StructureError

ATOL = 1e-5


@dataclass
class Problem:
    """One reason a cache or shard fails verification."""

    where: str
    reason: str
    kind: str = "value"  # structure.KINDS for structural refusals; else checksum/value/...

    def __str__(self) -> str:
        tag = "" if self.kind == "value" else f"[{self.kind}] "
        return f"{self.where}: {tag}{self.reason}"


def _check_offsets(off: np.ndarray, total: int, name: str) -> None:
    if off.shape[0] == 0 or off[0] != 0 or off[-1] != total or np.any(np.diff(off) < 0):
        raise schema.SchemaError(f"{name} does not partition its {total} rows")


def _read(f: h5py.File, name: str, as_str: bool = False) -> np.ndarray:
    """Read a whole dataset, turning an HDF5 filter failure into a named checksum error."""
    try:
        ds = f[name]
        return ds.asstr()[()] if as_str else ds[()]
    except OSError as err:
        if "filter" in str(err):
            raise schema.SchemaError(f"{name}: checksum (fletcher32) mismatch — the data is "
                                     f"corrupted") from err
        raise schema.SchemaError(f"{name}: unreadable ({err})") from err


def check_shard_tables(f: h5py.File, rows: dict[str, int]) -> int:
    """Check how a shard's tables fit together (status, offsets, K, scenes, row pointers, ids of
    questions and aliases), not the float values. Raises SchemaError.

    Readers run this in their check (cache_format/check_child.py): a reader never slices a prior
    or a frame table with offsets that disagree with each other.

    Returns:
        The number of failed videos.
    """
    status = _read(f, "videos/status", as_str=True)
    if not set(status.tolist()) <= {"ok", "failed"}:
        raise schema.SchemaError(f"videos/status holds values other than ok/failed: "
                                 f"{sorted(set(status.tolist()))}")
    fo = _read(f, "videos/frame_offset")
    so = _read(f, "videos/scene_offset")
    _check_offsets(fo, rows["frames"], "videos/frame_offset")
    _check_offsets(so, rows["scenes"], "videos/scene_offset")
    k = np.diff(fo)
    failed = status != "ok"
    if np.any(k[failed] != 0):
        raise schema.SchemaError("a failed video holds frames")
    if np.any(k[~failed] <= 0) or np.any(k[~failed] % 2):
        raise schema.SchemaError("an ok video has K <= 0 or odd K sampled frames")
    if np.any((np.diff(so)[~failed]) <= 0):
        raise schema.SchemaError("an ok video has no scene")
    errors = _read(f, "videos/error", as_str=True)
    if any(not errors[i] for i in np.flatnonzero(failed)):
        raise schema.SchemaError("a failed video has an empty error")
    scene = _read(f, "frames/scene")
    per_video_scenes = np.repeat(np.diff(so), k)
    if np.any(scene < 0) or np.any(scene >= per_video_scenes):
        raise schema.SchemaError("frames/scene points outside its video's scenes")
    vrow = _read(f, "questions/video_row")
    if np.any(vrow < 0) or np.any(vrow >= rows["videos"]):
        raise schema.SchemaError("questions/video_row points outside the videos table")
    if np.any(failed[vrow]):
        raise schema.SchemaError("a question refers to a failed video")
    vids = _read(f, "videos/video_id", as_str=True)
    names = set(zip(range(len(vids)), vids.tolist()))
    names |= set(zip(_read(f, "aliases/video_row").tolist(),
                     _read(f, "aliases/video_id", as_str=True).tolist()))
    qvids = _read(f, "questions/video_id", as_str=True).tolist()
    if not all((row, vid) in names for row, vid in zip(vrow.tolist(), qvids)):
        raise schema.SchemaError("questions/video_id disagrees with questions/video_row")
    qo = _read(f, "questions/frame_offset")
    _check_offsets(qo, rows["qframes"], "questions/frame_offset")
    if np.any(np.diff(qo) != k[vrow]):
        raise schema.SchemaError("a question's saliences do not have its video's K values")
    arow = _read(f, "aliases/video_row")
    if np.any(arow < 0) or np.any(arow >= rows["videos"]):
        raise schema.SchemaError("aliases/video_row points outside the videos table")
    if qo.shape[0] > 1 and rows["qframes"]:  # a zeroed chunk passes fletcher32 (its sum is 0)
        mass = np.add.reduceat(np.abs(_read(f, "qframes/prior")).astype(np.float64), qo[:-1])
        if np.any(mass == 0):
            raise schema.SchemaError(f"qframes/prior of question row {int(np.argmin(mass))} is "
                                     f"all zeros (a prior sums to 1: the data is corrupted)")
    return int(failed.sum())


def check_shard_values(f: h5py.File, rows: dict[str, int]) -> int:
    """Check every value of a shard whose structure is known good. Raises SchemaError.

    The tables (check_shard_tables), then finiteness, salience ranges and Σprior = 1. Reading
    the checksummed datasets also makes HDF5 verify their fletcher32 checksums.

    Returns:
        The number of failed videos.
    """
    failed = check_shard_tables(f, rows)
    for name in ("frames/timestamp", "frames/embedding", "questions/text_embedding",
                 "videos/fps", "videos/duration"):
        if not np.isfinite(_read(f, name)).all():
            raise schema.SchemaError(f"{name} contains NaN or inf")
    for name in QFRAME_ARRAYS:
        arr = _read(f, f"qframes/{name}")
        if not np.isfinite(arr).all():
            raise schema.SchemaError(f"qframes/{name} contains NaN or inf")
        if name in SALIENCES and arr.size and (arr.min() < 0 or arr.max() > 1):
            raise schema.SchemaError(f"qframes/{name} leaves [0, 1]")
    prior = _read(f, "qframes/prior")
    if prior.size and prior.min() < 0:
        raise schema.SchemaError("qframes/prior has negative values")
    qo = _read(f, "questions/frame_offset")
    if qo.shape[0] > 1:
        sums = np.add.reduceat(prior.astype(np.float64), qo[:-1]) if prior.size else np.zeros(0)
        bad = np.flatnonzero(np.abs(sums - 1) > ATOL)
        if bad.size:
            qid = _read(f, "questions/question_id", as_str=True)[int(bad[0])]
            raise schema.SchemaError(f"{bad.size} priors do not sum to 1 within {ATOL} (first: "
                                     f"question {qid!r}, sum {sums[bad[0]]!r})")
    return failed


def _problems(err: Exception, path: str) -> list[Problem]:
    """A check's exception as verify's one-line problem."""
    if isinstance(err, StructureError):
        return [Problem(f"{path}:{err.path}", err.detail, err.kind)]
    msg, prefix = str(err), f"{path}: "
    msg = msg[len(prefix):] if msg.startswith(prefix) else msg
    if msg.startswith(f"{path} is not a readable HDF5 shard: "):
        msg = f"unreadable ({msg.split(': ', 1)[1]})"
    return [Problem(path, msg)]


def _counts(answer: dict) -> dict[str, int]:
    rows = answer["rows"]
    return {"videos": rows["videos"], "failed_videos": answer["failed"],
            "questions": rows["questions"]}


def verify_shard(path: str | Path, config_hash: str | None = None,
                 embed_dim: int | None = None, fresh: bool = False) -> list[Problem]:
    """Verify one shard file on its own (no manifest needed), in a child process (fresh=False:
    a pass already remembered for these bytes' sha256 answers)."""
    path = as_path(path)
    (result,) = check_paths([path], [str(path)], "values", config_hash, embed_dim, fresh=fresh,
                            keep=False)
    return _problems(result, str(path)) if isinstance(result, Exception) else []


def verify_shards(paths: list, fresh: bool = False) -> dict[str, list[Problem]]:
    """Verify shard files on their own, checked in parallel child processes.

    Returns:
        str(path) -> its problems (empty when sound), for each path.
    """
    paths = [as_path(p) for p in paths]
    results = check_paths(paths, [str(p) for p in paths], "values", None, None, fresh=fresh,
                          keep=False)
    return {str(p): _problems(r, str(p)) if isinstance(r, Exception) else []
            for p, r in zip(paths, results)}


def verify_cache(cache_dir: str | Path, limits: Limits | None = None,
                 fresh: bool = False) -> list[Problem]:
    """Verify a whole cache: manifest, every shard's sha256, schema, values and counts.

    Every shard is checked in a child process (in parallel, under `limits`: default
    Limits.from_env()), unless a pass of the same check is remembered for its sha256 (in this
    process or the trust record; fresh=True re-checks). A shard that hangs, crashes or exhausts
    HDF5 is one problem of kind hang / crash / memory.

    Returns:
        The problems found; empty when the cache is sound.
    """
    cache_dir = as_path(cache_dir)
    try:
        manifest = load_manifest(cache_dir)
    except schema.CacheError as err:
        return [Problem(str(cache_dir / schema.MANIFEST_NAME), str(err))]
    problems: list[Problem] = []
    totals = {"videos": 0, "failed_videos": 0, "questions": 0}
    entries, paths = [], []
    for entry in manifest["shards"]:
        path = safe_member_path(cache_dir, entry["path"])
        if not path.is_file():
            problems.append(Problem(entry["path"], "shard file is missing", "missing"))
            continue
        if path.stat().st_size != entry["bytes"]:
            problems.append(Problem(entry["path"], f"size {path.stat().st_size} bytes, manifest "
                                                   f"says {entry['bytes']}", "size"))
            continue
        entries.append(entry)
        paths.append(path)
    results = check_paths(paths, [e["path"] for e in entries], "values",
                          manifest["config_hash"], manifest["embed_dim"], limits, fresh=fresh,
                          keep=False, expect_sha256=[e["sha256"] for e in entries])
    for entry, result in zip(entries, results):
        if isinstance(result, DigestMismatch):  # the digest of the very bytes to be checked
            problems.append(Problem(entry["path"], f"sha256 {result.found} does not match the "
                                                   f"manifest's {result.expected}", "checksum"))
            continue
        if isinstance(result, Exception):
            problems += _problems(result, entry["path"])
            continue
        answer = result[1]
        for key, n in _counts(answer).items():
            totals[key] += n
            if entry[key] != n:
                problems.append(Problem(entry["path"], f"holds {n} {key}, manifest says "
                                                       f"{entry[key]}"))
    if not problems:
        for key, n in totals.items():
            if manifest["counts"].get(key) != n:
                problems.append(Problem(schema.MANIFEST_NAME, f"counts.{key} is "
                                        f"{manifest['counts'].get(key)}, the shards hold {n}"))
    if not problems:  # ids and keys across shards: duplicates, control characters, dangling
        cache = Cache(cache_dir)
        try:
            cache.keys()
        except StructureError as err:
            problems.append(Problem(f"{err.where}:{err.path}", err.detail, err.kind))
        finally:
            cache.close()
    problems += [Problem(where, reason) for where, reason in verify_additions(cache_dir)]
    return problems
