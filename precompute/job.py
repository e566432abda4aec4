"""Shard jobs: decode, embed, score and write the videos of one job; finalize the cache.

Videos are assigned to jobs deterministically: sorted by video_id, job i of N takes every N-th
video starting at i. Each job is independent and idempotent: a job whose marker exists (with the
same config hash) is skipped WITHOUT loading the CLIP model; an unfinished one (killed, crashed)
leaves no marker and is redone whole. Once every job has its marker, `finalize_cache` writes the
manifest.

Per video: one decode pass in a worker process (precompute/worker.py, enforced timeout), CLIP on
the K sampled frames and on the question queries, the saliences (METHOD §2) and the fused prior
(§3). A video that cannot be decoded or processed becomes a failed record, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cache_format import QuestionRecord, ShardWriter, VideoRecord, finalize_cache, job_done
from cache_format.io import sha256_file
from cache_format.schema import SHARD_DIR
from cache_format.writer import marker_name

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
    """

    def __init__(self, config: PrecomputeConfig, dataset: Dataset, cache_dir: str | Path,
                 num_jobs: int = 1, embedder_factory: Callable | None = None):
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
        """Job indices without a finished marker.

        Raises:
            CacheError: the directory holds a cache of another config or sharding.
        """
        # one job_done call checks every marker's config hash and sharding; then only presence
        job_done(self.cache_dir, self.record, 0, self.num_jobs)
        shard_dir = self.cache_dir / SHARD_DIR
        return [i for i in range(self.num_jobs)
                if not (shard_dir / marker_name(i, self.num_jobs)).exists()]

    def run_job(self, job_index: int) -> JobResult:
        """Run job `job_index` unless it is done (then skip without loading the model)."""
        if not 0 <= job_index < self.num_jobs:
            raise ValueError(f"shard index {job_index} outside [0, {self.num_jobs}); "
                             f"use --shard-index in 0..{self.num_jobs - 1}")
        if job_done(self.cache_dir, self.record, job_index, self.num_jobs):
            logger.info("job %d of %d already done; skipped", job_index, self.num_jobs)
            return JobResult(job_index, "skipped")
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


def run_ray(pre: Precomputer, job_indices: list[int], options=None) -> list[JobResult]:
    """Map shard jobs onto a Ray cluster, with retries and timeouts (precompute/ray_engine.py)."""
    from .ray_engine import run_ray as run_on_ray

    return run_on_ray(pre, job_indices, options)
