"""Shard jobs: decode, embed, score and write the videos of one job; finalize the cache.

Videos are assigned to jobs deterministically: sorted by video_id, job i of N takes every N-th
video starting at i. Each job is independent and idempotent: a job whose marker is trusted (same
config hash; every file it names there with its size and sha256) is skipped WITHOUT loading the
CLIP model; an unfinished one (killed, crashed, or a marker that fails the check) is redone
whole. Two attempts of one job may overlap (a requeue): see cache_format/attempts.py. Once every
job has its marker, `finalize_cache` writes the manifest.

Before the model loads, a job checks that the cache directory is writable and has free space for
an estimate of its shards (`min_free_bytes`, or `estimate_job_bytes`), so a wrong `--out` or a
full disk fails in seconds with a StorageError, not after the model has loaded.

Per video: one decode pass in a worker process (precompute/worker.py, enforced timeout), CLIP on
the K sampled frames and on the question queries, the saliences (METHOD §2) and the fused prior
(§3). A video that cannot be decoded or processed becomes a failed record, never a crash.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cache_format import QuestionRecord, ShardWriter, VideoRecord, finalize_cache, job_done
from cache_format.io import StorageError, free_bytes, sha256_file
from cache_format.markers import job_state
from cache_format.schema import SHARD_DIR

from .config import PrecomputeConfig
from .datasets import Dataset, VideoItem
from .decode import DecodedVideo, VideoDecodeError
from .saliences import question_saliences, scene_salience, semantic_queries

logger = logging.getLogger(__name__)

VERSIONED = {"torch": "torch", "torchvision": "torchvision", "open_clip": "open_clip_torch",
             "decord": "decord", "scenedetect": "scenedetect", "opencv": "opencv-python-headless"}


def assign_jobs(video_ids: list[str], num_jobs: int) -> list[list[str]]:
    """Video ids of each job: sorted ids, job i takes ids[i::num_jobs]."""
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    ids = sorted(video_ids)
    return [ids[i::num_jobs] for i in range(num_jobs)]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the records (recorded in the cache)."""
    out = {}
    for key, dist in VERSIONED.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            # scenedetect ships as scenedetect or scenedetect-headless; opencv under several names
            alt = {"scenedetect": "scenedetect-headless", "opencv": "opencv-python"}.get(key)
            try:
                out[key] = metadata.version(alt) if alt else "absent"
            except metadata.PackageNotFoundError:
                out[key] = "absent"
    return out


def recorded_config(config: PrecomputeConfig, dataset: Dataset) -> dict:
    """The config recorded in (and hashing) the cache: every section plus the dataset's identity.

    The annotation file's sha256 is part of it, so a cache directory is never resumed with
    another set of questions.
    """
    out = config.to_dict()
    out["dataset"] = {"name": dataset.config.name, "format": dataset.config.format,
                      "annotation_sha256": sha256_file(dataset.config.annotation)}
    return out


def estimate_job_bytes(videos: list[VideoItem], num_frames: int, embed_dim: int = 1024) -> int:
    """A generous estimate of the shard bytes one job writes (used before the model loads).

    Per video: K float16 embeddings of `embed_dim` plus frame tables; per question: a float16
    text embedding and five float32 [K] saliences; 1.5x for HDF5 overhead. `embed_dim` 1024
    covers ViT-L/H CLIP (ViT-B is 512).
    """
    k = num_frames
    questions = sum(len(v.questions) for v in videos)
    raw = len(videos) * (k * (2 * embed_dim + 32) + 2048) + questions * (
        2 * embed_dim + 5 * 4 * k + 1024)
    return int(raw * 1.5) + (1 << 20)


def check_output_dir(cache_dir: Path, need_bytes: int) -> None:
    """Fail early, before the model loads, when the cache cannot be written.

    Creates `cache_dir/shards`, writes and removes a probe file there, and compares the free
    space with `need_bytes` (0 skips that comparison).

    Raises:
        StorageError: naming the path and the cause (not a directory, read-only, no space...).
    """
    shard_dir = cache_dir / SHARD_DIR
    try:
        shard_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(shard_dir, err, "create") from None
    probe = shard_dir / f".tmp-probe.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise StorageError(shard_dir, err, "write in") from None
    if need_bytes > 0:
        free = free_bytes(shard_dir)
        if free < need_bytes:
            raise StorageError(shard_dir, errno.ENOSPC, "write in", detail=(
                f"this job needs about {need_bytes / 1e9:.2f} GB, {free / 1e9:.2f} GB free "
                f"(--min-free-gb sets the estimate; 0 skips the check)"))


def content_hash(path: Path) -> str:
    """sha256 of a video file, "" when it cannot be read."""
    try:
        return sha256_file(path)
    except OSError:
        return ""


@dataclass
class JobResult:
    """What one job did: status "skipped" (already done) or "done", and its counts."""

    job_index: int
    status: str
    videos: int = 0
    failed: int = 0
    questions: int = 0


class Precomputer:
    """Runs the shard jobs of one (config, dataset, cache directory).

    Args:
        config: the precompute config (the dataset's sampling overrides already applied).
        dataset: the loaded dataset.
        cache_dir: the cache directory.
        num_jobs: N, the number of shard jobs.
        embedder_factory: builds the CLIP embedder from the ClipConfig (tests pass their own);
            called at most once, and only when a job actually has to run.
        min_free_bytes: free space a job needs before it starts (None: `estimate_job_bytes`;
            0: no check).
    """

    def __init__(self, config: PrecomputeConfig, dataset: Dataset, cache_dir: str | Path,
                 num_jobs: int = 1, embedder_factory: Callable | None = None,
                 min_free_bytes: int | None = None):
        if min_free_bytes is not None and min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be >= 0, got {min_free_bytes}")
        self.min_free_bytes = min_free_bytes
        self.config = config
        self.dataset = dataset
        self.cache_dir = Path(cache_dir)
        self.num_jobs = int(num_jobs)
        self.record = recorded_config(config, dataset)
        self._factory = embedder_factory or default_embedder
        self._embedder = None
        self._videos = {v.video_id: v for v in dataset.videos}
        self.jobs = assign_jobs(list(self._videos), self.num_jobs)

    @property
    def embedder(self):
        """The CLIP embedder, loaded on first use."""
        if self._embedder is None:
            self._embedder = self._factory(self.config.clip)
        return self._embedder

    @property
    def model_loaded(self) -> bool:
        return self._embedder is not None

    def pending(self) -> list[int]:
        """Job indices without a trusted marker (absent, or naming files that fail the check).

        Raises:
            CacheError: the directory holds a cache of another config or sharding.
        """
        # one job_done call checks every marker's config hash and sharding; then each marker
        job_done(self.cache_dir, self.record, 0, self.num_jobs)
        if not (self.cache_dir / SHARD_DIR).is_dir():
            return list(range(self.num_jobs))
        # sizes only here (a look at every job); a job's sha256s are checked before it is
        # skipped (run_job) and every job's when the manifest is written (finalize)
        return [i for i in range(self.num_jobs)
                if job_state(self.cache_dir, i, self.num_jobs, full=False)[0] != "done"]

    def check_storage(self, job_index: int) -> None:
        """The cache directory is writable and has room for job `job_index` (StorageError)."""
        need = self.min_free_bytes
        if need is None:
            sampling = self.config.sampling
            k = sampling.max_frames if sampling.fps else sampling.num_frames
            need = estimate_job_bytes([self._videos[v] for v in self.jobs[job_index]], k)
        check_output_dir(self.cache_dir, need)

    def run_job(self, job_index: int) -> JobResult:
        """Run job `job_index` unless it is done (then skip without loading the model)."""
        if not 0 <= job_index < self.num_jobs:
            raise ValueError(f"shard index {job_index} outside [0, {self.num_jobs}); "
                             f"use --shard-index in 0..{self.num_jobs - 1}")
        if job_done(self.cache_dir, self.record, job_index, self.num_jobs):
            logger.info("job %d of %d already done; skipped", job_index, self.num_jobs)
            return JobResult(job_index, "skipped")
        self.check_storage(job_index)  # before the model loads
        videos = [self._videos[v] for v in self.jobs[job_index]]
        result = JobResult(job_index, "done")
        cfg = self.config
        items = [(v, v.abs_path) for v in videos]
        from .worker import DecodePool

        with DecodePool(cfg.sampling, cfg.scenes, timeout_s=cfg.decode.timeout_s,
                        prefetch=max(1, cfg.decode.prefetch)) as pool, ExitStack() as stack:
            pool.start(wait=False)  # the decode workers import their libraries while CLIP loads
            emb = self.embedder
            writer = stack.enter_context(ShardWriter(
                self.cache_dir, self.record, embed_dim=emb.embed_dim, model=emb.model_info,
                job_index=job_index, num_jobs=self.num_jobs, library_versions=library_versions(),
                max_videos=cfg.shards.max_videos, max_bytes=cfg.shards.max_bytes))
            decoded = stack.enter_context(closing(pool.decode(items)))
            bar = tqdm(decoded, total=len(items), unit="video",
                       desc=f"job {job_index + 1}/{self.num_jobs}")
            for (video, _path), out in bar:
                record, questions = self.process(video, out)
                if record.ok:
                    writer.add(record, questions)
                else:
                    writer.add(record, [], skipped_questions=len(video.questions))
                    result.failed += 1
                result.videos += 1
                result.questions += len(questions)
                bar.set_postfix(failed=result.failed)
        return result

    def process(self, video: VideoItem, decoded: DecodedVideo | VideoDecodeError
                ) -> tuple[VideoRecord, list[QuestionRecord]]:
        """The record and question records of one decoded video (a failed record on error)."""
        digest = content_hash(video.abs_path)
        if isinstance(decoded, VideoDecodeError):
            logger.warning("video %s failed: %s", video.video_id, decoded)
            # the dataset-relative path, so a cache does not depend on where the data is mounted
            error = str(decoded).replace(str(video.abs_path), video.path)
            return VideoRecord.failed(video.video_id, video.path, error, digest), []
        try:
            return self._score(video, decoded, digest)
        except (ValueError, RuntimeError) as err:  # this video's failure, not the job's
            logger.exception("video %s failed while embedding/scoring", video.video_id)
            return VideoRecord.failed(video.video_id, video.path,
                                      f"{type(err).__name__} while embedding/scoring: {err}",
                                      digest), []

    def _score(self, video: VideoItem, dv: DecodedVideo, digest: str
               ) -> tuple[VideoRecord, list[QuestionRecord]]:
        emb, cfg = self.embedder, self.config
        glob, patches = emb.embed_images(dv.frames)  # (K, D), (K, T, D)
        scene = scene_salience(glob, dv.frame_indices, dv.scenes,
                               cfg.saliences.scene_temperature)
        record = VideoRecord(
            video_id=video.video_id, path=video.path, content_hash=digest, fps=float(dv.fps),
            duration=float(dv.duration), num_frames=int(dv.num_frames),
            frame_indices=dv.frame_indices, timestamps=dv.timestamps, scenes=dv.scenes,
            frame_scene=scene.frame_scene, scene_rep=scene.scene_rep,
            embeddings=glob.astype(np.float16))
        queries = [semantic_queries(q.question, q.options, cfg.saliences.option_queries)
                   for q in video.questions]
        flat = [t for qs in queries for t in qs]
        text = emb.embed_texts(flat)  # (sum Q, D)
        out, start = [], 0
        for q, qs in zip(video.questions, queries):
            t = text[start:start + len(qs)]  # (Q, D); row 0 is the question itself
            start += len(qs)
            sal = question_saliences(scene, glob, patches, t, cfg.saliences, cfg.fusion)
            out.append(QuestionRecord(
                video_id=video.video_id, question_id=q.question_id, question=q.question,
                options=list(q.options), answer=q.answer, problem_type=q.problem_type,
                text_embedding=t[0].astype(np.float16), uniform=sal.uniform, scene=sal.scene,
                semantic=sal.semantic, semantic_raw=sal.semantic_raw, prior=sal.prior))
        return record, out

    def finalize(self) -> dict:
        """Write manifest.json (every job must be done)."""
        return finalize_cache(self.cache_dir)


def default_embedder(clip_cfg):
    """ClipEmbedder from a ClipConfig."""
    from .clip import ClipEmbedder

    return ClipEmbedder(clip_cfg.model, clip_cfg.pretrained, device=clip_cfg.device,
                        batch_size=clip_cfg.batch_size, precision=clip_cfg.precision,
                        seed=clip_cfg.seed)


def run_local(pre: Precomputer, job_indices: list[int]) -> list[JobResult]:
    """Run jobs one after another in this process (the model is loaded once, if at all)."""
    return [pre.run_job(i) for i in job_indices]


def _ray_job(config_dict: dict, dataset_yaml: dict, cache_dir: str, num_jobs: int,
             job_index: int) -> dict:
    """One shard job inside a Ray worker (rebuilds config and dataset from plain data)."""
    from .datasets import DatasetConfig, load_dataset

    config = PrecomputeConfig.from_dict(config_dict)
    dataset = load_dataset(DatasetConfig(**dataset_yaml), allow_empty=True)  # checked by the driver
    res = Precomputer(config, dataset, cache_dir, num_jobs).run_job(job_index)
    return dataclasses.asdict(res)


def run_ray(pre: Precomputer, job_indices: list[int]) -> list[JobResult]:
    """Map shard jobs onto a Ray cluster (RAY_ADDRESS, or a local Ray if none)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--engine ray needs Ray: pip install ray (or use --engine local, or "
                           "SLURM arrays with --shard-index)") from None
    if not ray.is_initialized():
        ray.init()
    gpus = 1 if pre.config.clip.device.startswith("cuda") else 0
    task = ray.remote(num_gpus=gpus)(_ray_job)
    config_dict = {k: v for k, v in pre.record.items() if k != "dataset"}
    ds = dataclasses.asdict(pre.dataset.config)
    refs = [task.remote(config_dict, ds, str(pre.cache_dir), pre.num_jobs, i)
            for i in job_indices]
    results = []
    for ref in tqdm(refs, unit="job", desc="ray jobs"):
        results.append(JobResult(**ray.get(ref)))
    return results
