"""ShardWriter: buffers records and writes whole HDF5 shards atomically; finalize_cache.

A precompute job i of n writes the files `shards/{i:05d}-of-{n:05d}-{part:04d}-{sha12}.h5` and,
once all of them are whole, its marker `shards/job-{i:05d}-of-{n:05d}.json`, which names them
with their sizes and sha256s. The marker is the job's single commit point, and it is trusted only
while every file it names is there with those sizes and sha256s. `finalize_cache` writes
`manifest.json` from trusted markers — last, so a cache with a manifest is complete. Several
attempts of one job may overlap (cache_format/attempts.py says how they stay out of each other's
way); none deletes what another committed.

A shard is built in memory (HDF5 core driver) and written with plain `os.write`: a full disk or
a file-size limit is an OSError naming the file, never a crash inside HDF5.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from pathlib import Path

import h5py
import numpy as np

from . import schema
from .attempts import Attempt, collect_garbage
from .digest import DIGEST_ATTR, values_sha256
from .fusion import QFRAME_ARRAYS
from .io import StorageError, write_bytes_atomic, write_json_atomic
from .markers import (  # noqa: F401  (part_name, marker_problem: re-exported)
    JobsUnfinished,
    job_state,
    marker_name,
    marker_problem,
    part_name,
    read_markers,
    remember_sha256,
)
from .records import QuestionRecord, VideoRecord
from .structure import shard_attrs

log = logging.getLogger(__name__)

_STR = h5py.string_dtype("utf-8")


def collect_library_versions(extra: dict | None = None) -> dict[str, str]:
    """Versions of the libraries that shape a cache's bytes, plus the caller's (torch, ...)."""
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version}
    versions.update(extra or {})
    return dict(sorted(versions.items()))


def _check_same_cache(cache_dir: Path, cfg_hash: str, num_jobs: int) -> None:
    """Refuse to mix configs or shardings in one cache directory."""
    manifest = cache_dir / schema.MANIFEST_NAME
    hashes = []
    if manifest.exists():
        with open(manifest, encoding="utf-8") as f:
            hashes.append((manifest.name, json.load(f).get("config_hash"), None))
    for m in read_markers(cache_dir / schema.SHARD_DIR):
        hashes.append((marker_name(m["job_index"], m["num_jobs"]), m["config_hash"],
                       m["num_jobs"]))
    for name, found, jobs in hashes:
        if found != cfg_hash:
            raise schema.CacheError(
                f"{cache_dir} holds a cache built with config hash {found} ({name}); this run "
                f"has config hash {cfg_hash}. Write to another directory or delete {cache_dir}.")
        if jobs is not None and jobs != num_jobs:
            raise schema.CacheError(
                f"{cache_dir} was started with {jobs} shard jobs ({name}); this run asks for "
                f"{num_jobs}. Keep --num-shards the same or delete {cache_dir}.")


def job_done(cache_dir: str | Path, config: dict, job_index: int, num_jobs: int) -> bool:
    """True when job `job_index` of `num_jobs` has finished with this config and its marker is
    trusted (every file it names exists with its recorded size and sha256).

    A marker that fails the check is logged and the job counts as unfinished: the next run
    redoes it, and the marker is replaced when the new attempt commits.

    Raises:
        CacheError: the directory holds a cache of another config or sharding.
    """
    cache_dir = Path(cache_dir)
    if not (cache_dir / schema.SHARD_DIR).is_dir() and not (
            cache_dir / schema.MANIFEST_NAME).exists():
        return False
    _check_same_cache(cache_dir, schema.config_hash(config), num_jobs)
    state, why = job_state(cache_dir, job_index, num_jobs)
    if state == "invalid":
        log.warning("job %d of %d has a marker that cannot be trusted (%s); it will be redone",
                    job_index, num_jobs, why)
    return state == "done"


def _put(group: h5py.Group, name: str, data: np.ndarray | list[str], checksum: bool) -> None:
    """Create one dataset deterministically (no timestamps); fletcher32 chunks where asked."""
    if isinstance(data, list):
        group.create_dataset(name, data=np.array(data, dtype=object), dtype=_STR,
                             track_times=False)
        return
    kwargs = {}
    if checksum and data.shape[0] > 0:
        row_bytes = max(1, data.itemsize * int(np.prod(data.shape[1:], dtype=np.int64)))
        rows = int(min(data.shape[0], max(1, (1 << 18) // row_bytes)))
        kwargs = {"chunks": (rows, *data.shape[1:]), "fletcher32": True}
    group.create_dataset(name, data=data, track_times=False, **kwargs)


class ShardWriter:
    """Write the records of one precompute job into whole shards.

    Args:
        cache_dir: the cache directory (created if needed).
        config: the full precompute config (plain JSON data); its hash keys the cache.
        embed_dim: D of the CLIP embeddings.
        model: {"name": ..., "pretrained": tag | "random" | "file:<sha256>"}.
        job_index, num_jobs: this job's place in the sharding.
        library_versions: versions of the libraries that made the records (torch, open_clip...).
        max_videos, max_bytes: a shard file is written when either limit is reached.
        video_root: the directory the records' video paths are relative to, as precompute saw
            it (recorded in the manifest, outside the config hash: moving the videos does not
            change the cache; readers find the videos there unless told otherwise).

    Use as a context manager; records are `add`-ed in a deterministic order. On a clean exit the
    last shard and the job marker are written; on an exception no marker is written, so the job
    counts as unfinished and is redone by the next run.
    """

    def __init__(self, cache_dir: str | Path, config: dict, *, embed_dim: int, model: dict,
                 job_index: int = 0, num_jobs: int = 1, library_versions: dict | None = None,
                 max_videos: int = 1000, max_bytes: int = 1 << 30,
                 video_root: str | None = None):
        if not 0 <= job_index < num_jobs:
            raise ValueError(f"job_index {job_index} must be in [0, num_jobs={num_jobs})")
        if embed_dim <= 0 or max_videos <= 0 or max_bytes <= 0:
            raise ValueError("embed_dim, max_videos and max_bytes must be positive")
        if not {"name", "pretrained"} <= set(model):
            raise ValueError(f"model must give 'name' and 'pretrained', got {model}")
        schema.check_finite_config(config)
        self.cache_dir = Path(cache_dir)
        self.shard_dir = self.cache_dir / schema.SHARD_DIR
        self.config = config
        self.config_hash = schema.config_hash(config)
        self.embed_dim = int(embed_dim)
        self.model = dict(model)
        self.job_index, self.num_jobs = int(job_index), int(num_jobs)
        self.library_versions = collect_library_versions(library_versions)
        self.max_videos, self.max_bytes = max_videos, max_bytes
        self.video_root = None if video_root is None else str(video_root)
        self._videos: list[VideoRecord] = []
        self._questions: list[QuestionRecord] = []
        self._aliases: list[tuple[str, str]] = []
        self._bytes = 0
        self._files: list[dict] = []
        self._failures: list[dict] = []
        self._seen_videos: set[str] = set()
        self._counts = {"videos": 0, "failed_videos": 0, "questions": 0, "skipped_questions": 0}
        self._open = False
        self._attempt: Attempt | None = None

    # -- context ------------------------------------------------------------------------------
    def __enter__(self) -> ShardWriter:
        try:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(self.shard_dir, err, "create") from None
        _check_same_cache(self.cache_dir, self.config_hash, self.num_jobs)
        marker = self.shard_dir / marker_name(self.job_index, self.num_jobs)
        state, why = job_state(self.cache_dir, self.job_index, self.num_jobs)
        if state == "done":
            raise schema.CacheError(f"job {self.job_index} of {self.num_jobs} is already finished "
                                    f"({marker}); delete the marker to redo it")
        if state == "invalid":
            log.warning("job %d of %d: redoing it, its marker cannot be trusted (%s)",
                        self.job_index, self.num_jobs, why)
        # Nothing is deleted here: another attempt of this job may be running, or may have
        # committed; garbage is collected only after this attempt commits or stops.
        self._attempt = Attempt(self.shard_dir, self.job_index, self.num_jobs)
        self._attempt.start()
        self._open = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._open = False
        if exc_type is None:
            try:
                if self._videos or not self._files:
                    self._flush()
                self._write_marker()
            except BaseException:
                self._stop()
                raise
            self._stop()
            return
        # a write failure or an interrupt is reported once by the caller; anything else here
        level = logging.DEBUG if (issubclass(exc_type, StorageError)
                                  or not issubclass(exc_type, Exception)) else logging.WARNING
        log.log(level, "job %d/%d stopped by %s; no marker written", self.job_index,
                self.num_jobs, exc_type.__name__)
        self._stop()

    def _stop(self) -> None:
        """End this attempt (claim and temporary files gone), then collect this job's garbage."""
        if self._attempt is not None:
            self._attempt.end()
            self._attempt = None
        collect_garbage(self.cache_dir, self.num_jobs, {self.job_index})

    # -- records ------------------------------------------------------------------------------
    def add(self, video: VideoRecord, questions: list[QuestionRecord], *,
            skipped_questions: int = 0, aliases: list[str] = ()) -> None:
        """Buffer one video with its questions (none for a failed video).

        Args:
            video: the video record.
            questions: its questions, each with `video_id` equal to the video's id or an alias.
            skipped_questions: questions of this video that got no prior (e.g. it failed).
            aliases: other ids under which this video is known (used by `cache merge`).
        """
        if not self._open:
            raise RuntimeError("use ShardWriter as a context manager: `with ShardWriter(...) as w`")
        video.validate(self.embed_dim if video.ok else None)
        if video.video_id in self._seen_videos:
            raise schema.SchemaError(f"video {video.video_id!r} added twice to job "
                                     f"{self.job_index}")
        if not video.ok and questions:
            raise schema.SchemaError(f"video {video.video_id!r} failed; its questions have no "
                                     f"prior — pass them as skipped_questions")
        qids = set()
        names = {video.video_id, *aliases}
        for q in questions:
            if q.video_id not in names:
                raise schema.SchemaError(f"question {q.key!r} added under video "
                                         f"{video.video_id!r}")
            if q.key in qids:
                raise schema.SchemaError(f"question {q.key!r} added twice")
            qids.add(q.key)
            q.validate(video.num_sampled, self.embed_dim)
        self._seen_videos.add(video.video_id)
        self._videos.append(video)
        self._questions.extend(questions)
        self._aliases.extend((a, video.video_id) for a in aliases)
        self._counts["videos"] += 1
        self._counts["questions"] += len(questions)
        self.add_skipped(skipped_questions)
        if not video.ok:
            self._counts["failed_videos"] += 1
            self._failures.append({"video_id": video.video_id, "path": video.path,
                                   "error": video.error})
        self._bytes += video.embeddings.nbytes + sum(
            q.text_embedding.nbytes + 5 * q.prior.nbytes for q in questions)
        if len(self._videos) >= self.max_videos or self._bytes >= self.max_bytes:
            self._flush()

    def add_skipped(self, n: int) -> None:
        """Count questions that got no prior (their video failed, or they were filtered)."""
        self._counts["skipped_questions"] += int(n)

    # -- files --------------------------------------------------------------------------------
    def _flush(self) -> None:
        part = len(self._files)
        attrs = {"format": schema.FORMAT_NAME, "schema_version": schema.SCHEMA_VERSION,
                 "config_hash": self.config_hash, "embed_dim": self.embed_dim,
                 "job_index": self.job_index, "num_jobs": self.num_jobs, "part": part}
        image = shard_image(self._videos, self._questions, self._aliases, attrs, self.embed_dim)
        digest = hashlib.sha256(image).hexdigest()
        final = self.shard_dir / part_name(self.job_index, self.num_jobs, part, digest)
        self._attempt.announce(final.name)  # before the name exists: see attempts.py
        write_bytes_atomic(final, image, self._attempt.tmp(part_name(self.job_index,
                                                                     self.num_jobs, part)))
        remember_sha256(final, digest)
        self._files.append({
            "path": f"{schema.SHARD_DIR}/{final.name}", "sha256": digest,
            "bytes": len(image), "videos": len(self._videos),
            "failed_videos": sum(not v.ok for v in self._videos),
            "questions": len(self._questions)})
        log.info("wrote %s (%d videos, %d questions)", final, len(self._videos),
                 len(self._questions))
        self._videos, self._questions, self._aliases, self._bytes = [], [], [], 0

    def _missing_files(self) -> list[str]:
        missing = []
        for f in self._files:
            try:
                if (self.cache_dir / f["path"]).stat().st_size != f["bytes"]:
                    missing.append(f["path"])
            except FileNotFoundError:
                missing.append(f["path"])
        return missing

    def _write_marker(self) -> None:
        """Commit: write the marker, only while every part it names is in place."""
        lost = ("{} vanished before this attempt committed: another attempt judged this one "
                "dead (a heartbeat older than VIDEOCFR_ATTEMPT_STALE_S?); rerun the job")
        if missing := self._missing_files():
            raise JobsUnfinished(lost.format(", ".join(missing)))
        marker = {
            "format": schema.FORMAT_NAME, "schema_version": schema.SCHEMA_VERSION,
            "config": self.config, "config_hash": self.config_hash, "embed_dim": self.embed_dim,
            "model": self.model, "library_versions": self.library_versions,
            "job_index": self.job_index, "num_jobs": self.num_jobs, "files": self._files,
            "counts": self._counts, "failures": self._failures,
            "attempt": self._attempt.token}
        if self.video_root is not None:
            marker["video_root"] = self.video_root
        path = self.shard_dir / marker_name(self.job_index, self.num_jobs)
        write_json_atomic(path, marker, self._attempt.tmp(path.name))
        if missing := self._missing_files():  # lost between the check and the rename
            try:
                if json.loads(path.read_text(encoding="utf-8")).get("attempt") == \
                        self._attempt.token:
                    path.unlink()
            except (OSError, ValueError):
                pass
            raise JobsUnfinished(lost.format(", ".join(missing)))


def write_shard(path: Path, videos: list[VideoRecord], questions: list[QuestionRecord],
                aliases: list[tuple[str, str]], attrs: dict, embed_dim: int) -> None:
    """Write one shard file at `path` atomically.

    Raises:
        StorageError: the file could not be written (nothing is left at `path`'s temp name).
    """
    write_bytes_atomic(Path(path), shard_image(videos, questions, aliases, attrs, embed_dim))


def shard_image(videos: list[VideoRecord], questions: list[QuestionRecord],
                aliases: list[tuple[str, str]], attrs: dict, embed_dim: int) -> bytes:
    """The bytes of one shard file, built in memory (HDF5 core driver, no backing store).

    HDF5 never touches the disk here, so a full disk cannot leave it in a state that crashes
    at close; the caller writes the bytes with plain file I/O. The shard is read back once for
    its values digest (root attribute `values_sha256`, cache_format/digest.py).
    """
    row_of = {v.video_id: i for i, v in enumerate(videos)}
    row_of.update({alias: row_of[vid] for alias, vid in aliases})
    k = [v.num_sampled for v in videos]
    n_scenes = [len(v.scenes) if v.ok else 0 for v in videos]
    qk = [k[row_of[q.video_id]] for q in questions]

    def cat(arrays: list[np.ndarray], dtype, tail: tuple = ()) -> np.ndarray:
        return (np.concatenate(arrays).astype(dtype, copy=False) if arrays
                else np.zeros((0, *tail), dtype))

    ok = [v for v in videos if v.ok]
    data: dict[str, np.ndarray | list[str]] = {
        "videos/video_id": [v.video_id for v in videos],
        "videos/path": [v.path for v in videos],
        "videos/content_hash": [v.content_hash for v in videos],
        "videos/status": [v.status for v in videos],
        "videos/error": [v.error for v in videos],
        "videos/fps": np.array([v.fps for v in videos], np.float64),
        "videos/duration": np.array([v.duration for v in videos], np.float64),
        "videos/num_frames": np.array([v.num_frames for v in videos], np.int64),
        "videos/frame_offset": np.concatenate([[0], np.cumsum(k, dtype=np.int64)]).astype(np.int64),
        "videos/scene_offset": np.concatenate([[0], np.cumsum(n_scenes, dtype=np.int64)]
                                              ).astype(np.int64),
        "frames/index": cat([v.frame_indices for v in ok], np.int64),
        "frames/timestamp": cat([v.timestamps for v in ok], np.float64),
        "frames/scene": cat([v.frame_scene for v in ok], np.int32),
        "frames/scene_rep": cat([v.scene_rep for v in ok], bool),
        "frames/embedding": cat([v.embeddings for v in ok], np.float16, (embed_dim,)),
        "scenes/bounds": cat([v.scenes for v in ok], np.int64, (2,)),
        "questions/video_id": [q.video_id for q in questions],
        "questions/question_id": [q.question_id for q in questions],
        "questions/video_row": np.array([row_of[q.video_id] for q in questions], np.int64),
        "questions/question": [q.question for q in questions],
        "questions/options": [schema.canonical_json(list(q.options)) for q in questions],
        "questions/answer": [q.answer for q in questions],
        "questions/problem_type": [q.problem_type for q in questions],
        "questions/text_embedding": (np.stack([q.text_embedding for q in questions])
                                     .astype(np.float16) if questions
                                     else np.zeros((0, embed_dim), np.float16)),
        "questions/frame_offset": np.concatenate([[0], np.cumsum(qk, dtype=np.int64)]
                                                 ).astype(np.int64),
        "aliases/video_id": [a for a, _ in aliases],
        "aliases/video_row": np.array([row_of[v] for _, v in aliases], np.int64),
    }
    for name in QFRAME_ARRAYS:
        data[f"qframes/{name}"] = cat([getattr(q, name) for q in questions], np.float32)
    _IMAGES[0] += 1
    with h5py.File(f"videocfr-shard-{_IMAGES[0]}", "w", driver="core", backing_store=False,
                   track_order=False) as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        for name in schema.SHARD_DATASETS:  # fixed order: identical input, identical bytes
            group, leaf = name.split("/")
            grp = f.require_group(group)
            _put(grp, leaf, data[name], name in schema.CHECKSUMMED)
        # the digest of the values as a reader will read them back (cache_format/digest.py)
        f.attrs[DIGEST_ATTR] = values_sha256(f, shard_attrs(f, "the shard being written"))
        f.flush()
        return f.id.get_file_image()


_IMAGES = [0]  # a unique in-memory file name per image (HDF5 keys open files by name)


def finalize_cache(cache_dir: str | Path) -> dict:
    """Write manifest.json from the job markers once every job has finished.

    Every marker is checked first (each file it names exists with its size and sha256). After
    the manifest is renamed into place its files are checked again, and the manifest is rebuilt
    when an overlapping attempt replaced a marker meanwhile. Then the garbage of dead or
    superseded attempts is removed.

    Returns:
        The manifest.

    Raises:
        CacheError: no markers, or markers that disagree.
        JobsUnfinished: jobs missing or with a marker that cannot be trusted (named; rerun them).
        StorageError: the manifest could not be written.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / schema.MANIFEST_NAME
    for _ in range(3):
        manifest = _manifest_from_markers(cache_dir)
        write_json_atomic(path, manifest)
        gone = [f["path"] for f in manifest["shards"] if not (cache_dir / f["path"]).exists()]
        if not gone:
            collect_garbage(cache_dir, manifest["num_jobs"])
            return manifest
        log.warning("%s changed while finalizing (%s); finalizing again", cache_dir, gone[0])
    path.unlink(missing_ok=True)
    raise JobsUnfinished(f"{cache_dir}: shard files keep vanishing while finalizing ({gone[0]}); "
                         f"another attempt is still running: finalize once it has ended")


def _manifest_from_markers(cache_dir: Path) -> dict:
    markers = read_markers(cache_dir / schema.SHARD_DIR)
    if not markers:
        raise JobsUnfinished(f"{cache_dir}: no finished shard jobs; run precompute first")
    first = markers[0]
    num_jobs = first["num_jobs"]
    for m in markers[1:]:
        for key in ("config_hash", "num_jobs", "embed_dim", "model"):
            if m[key] != first[key]:
                raise schema.CacheError(f"{cache_dir}: job markers disagree on {key}: "
                                        f"{first[key]!r} vs {m[key]!r}")
    missing = sorted(set(range(num_jobs)) - {m["job_index"] for m in markers})
    bad = [(m["job_index"], p) for m in markers if (p := marker_problem(cache_dir, m))]
    if missing or bad:
        lines = []
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            lines.append(f"{len(missing)} of {num_jobs} shard jobs are not finished (job index "
                         f"{shown})")
        for i, problem in bad[:20]:
            lines.append(f"job {i}'s marker cannot be trusted: {problem}")
        raise JobsUnfinished(f"{cache_dir}: {'; '.join(lines)}; run them (again), then "
                             f"finalize")
    counts = {key: sum(m["counts"][key] for m in markers) for key in first["counts"]}
    roots = {"video_root": first["video_root"]} if isinstance(first.get("video_root"), str) else {}
    # a job committed by an older videocfr keeps its version: the manifest states the weakest
    version = min(m.get("schema_version", schema.SCHEMA_VERSION) for m in markers)
    return {**roots,
        "format": schema.FORMAT_NAME, "schema_version": version,
        "config": first["config"], "config_hash": first["config_hash"],
        "embed_dim": first["embed_dim"], "model": first["model"],
        "library_versions": first["library_versions"], "num_jobs": num_jobs,
        "shards": [f for m in markers for f in m["files"]], "counts": counts,
        "failures": [x for m in markers for x in m["failures"]],
    }
