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

Decoded videos are scored in groups of about `clip.batch_size` frames: their frames go through
one CLIP forward. On a GPU the embeddings stay there, the semantic scores are computed there
(saliences.semantic_raw_device) and only the global embeddings, text embeddings and raw scores
come back; on the CPU the numpy path (saliences.semantic_raw) scores them. A GPU that fails
(precompute.clip.DeviceFailure) stops the job without its marker: rerunning redoes it.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from videocfr.cache_format import QuestionRecord, ShardWriter, VideoRecord, finalize_cache, job_done
from videocfr.cache_format.io import StorageError, free_bytes, sha256_file
from videocfr.cache_format.markers import job_state
from videocfr.cache_format.schema import SHARD_DIR
from videocfr.vlm.decoders import get_decoder

from .config import PrecomputeConfig
from .datasets import Dataset, VideoItem
from .decode import DecodedVideo, VideoDecodeError
from .saliences import (
    question_saliences,
    scene_salience,
    semantic_queries,
    semantic_raw_device,
)

logger = logging.getLogger(__name__)

VERSIONED = {"torch": "torch", "torchvision": "torchvision", "open_clip": "open_clip_torch",
             "decord": "decord", "scenedetect": "scenedetect", "opencv": "opencv-python-headless"}


def assign_jobs(video_ids: list[str], num_jobs: int) -> list[list[str]]:
    """Video ids of each job: sorted ids, job i takes ids[i::num_jobs]."""
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    ids = sorted(video_ids)
    return [ids[i::num_jobs] for i in range(num_jobs)]


def library_versions(decoder: str = "decord") -> dict[str, str]:
    """Versions of the libraries that shape the records (recorded in the cache); a scanning
    backend's own (its `libraries`: PyAV's when sampling.decoder is pyav) beside decord's."""
    out = {}
    versioned = {**VERSIONED, **get_decoder(decoder).libraries}
    for key, dist in versioned.items():
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
    another set of questions; so is a local checkpoint file's (`clip.pretrained_sha256`), so a
    cache is never resumed, or taken as done, with other weights at the same path (a rebuilt
    world CLIP).
    """
    out = config.to_dict()
    if Path(config.clip.pretrained).is_file():
        out["clip"]["pretrained_sha256"] = sha256_file(config.clip.pretrained)
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
        device_scores: compute the semantic scores with torch on the embedder's device (True),
            with numpy on the host (False), or None: on the device unless it is the CPU (the
            numpy path keeps CPU caches as they were; tests compare both).
        min_free_bytes: free space a job needs before it starts (None: `estimate_job_bytes`;
            0: no check).
    """

    def __init__(self, config: PrecomputeConfig, dataset: Dataset, cache_dir: str | Path,
                 num_jobs: int = 1, embedder_factory: Callable | None = None,
                 device_scores: bool | None = None, min_free_bytes: int | None = None):
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
        self.device_scores = device_scores
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
        if self._embedder is None and self._factory is default_embedder:
            from .clip import resolve_device

            resolve_device(self.config.clip.device)  # no GPU for clip.device cuda: say so now
        videos = [self._videos[v] for v in self.jobs[job_index]]
        result = JobResult(job_index, "done")
        cfg = self.config
        items = [(v, v.abs_path) for v in videos]
        from .worker import DecodePool

        with DecodePool(cfg.sampling, cfg.scenes, timeout_s=cfg.decode.timeout_s,
                        prefetch=max(1, cfg.decode.prefetch),
                        num_workers=cfg.decode.num_workers()) as pool, ExitStack() as stack:
            # the decode workers import their libraries while CLIP loads (no more than needed)
            pool.start(wait=False, limit=len(items))
            emb = self.embedder
            writer = stack.enter_context(ShardWriter(
                self.cache_dir, self.record, embed_dim=emb.embed_dim, model=emb.model_info,
                job_index=job_index, num_jobs=self.num_jobs,
                library_versions=library_versions(cfg.sampling.decoder),
                max_videos=cfg.shards.max_videos, max_bytes=cfg.shards.max_bytes,
                video_root=str(self.dataset.config.video_root)))
            decoded = stack.enter_context(closing(pool.decode(items)))
            bar = tqdm(decoded, total=len(items), unit="video",
                       desc=f"job {job_index + 1}/{self.num_jobs}")
            for video, record, questions in self._records(bar):
                if record.ok:
                    writer.add(record, questions)
                else:
                    writer.add(record, [], skipped_questions=len(video.questions))
                    result.failed += 1
                result.videos += 1
                result.questions += len(questions)
                bar.set_postfix(failed=result.failed)
        return result

    def _records(self, decoded) -> Iterator[tuple[VideoItem, VideoRecord,
                                                   list[QuestionRecord]]]:
        """(video, record, question records) in input order, scored in groups of about
        `clip.batch_size` frames (a group closes once it holds that many).

        Groups are for the device path (large forwards keep a GPU busy). On the CPU each video is
        scored as soon as it is decoded, so finished videos reach the shard while a later one is
        still decoding (or hangs until its timeout)."""
        group: list[tuple[VideoItem, DecodedVideo | VideoDecodeError]] = []
        frames = 0
        for (video, _path), out in decoded:
            group.append((video, out))
            frames += len(out.frame_indices) if isinstance(out, DecodedVideo) else 0
            if frames >= self.config.clip.batch_size or not self._on_device():
                yield from self.process_group(group)
                group, frames = [], 0
        yield from self.process_group(group)

    def process_group(self, group: list[tuple[VideoItem, DecodedVideo | VideoDecodeError]]
                      ) -> list[tuple[VideoItem, VideoRecord, list[QuestionRecord]]]:
        """Records of several decoded videos, their frames embedded together.

        If the batched pass fails for a reason other than the device (e.g. one odd video), each
        video is redone alone, so only the bad one becomes a failed record.

        Raises:
            DeviceFailure: the GPU failed (the job must stop unfinished).
        """
        from .clip import DeviceFailure, is_device_error

        ok = [(v, d) for v, d in group if isinstance(d, DecodedVideo)]
        scored: dict[int, tuple[VideoRecord, list[QuestionRecord]]] = {}
        if len(ok) > 1 or (ok and self._on_device()):
            try:
                for (video, _dv), out in zip(ok, self._score_many(ok)):
                    scored[id(video)] = out
            except DeviceFailure:
                raise
            except (ValueError, RuntimeError) as err:
                if is_device_error(err):
                    raise DeviceFailure(f"the CLIP device failed while scoring "
                                        f"{[v.video_id for v, _ in ok]}: {err}; the shard job "
                                        f"stops unfinished, rerun it to redo it") from err
                logger.warning("scoring %d videos together failed (%s: %s); scoring them one "
                               "by one", len(ok), type(err).__name__, err)
                scored = {}
        out = []
        for video, dv in group:
            if id(video) in scored:
                out.append((video, *scored[id(video)]))
            else:
                out.append((video, *self.process(video, dv)))
        return out

    def _on_device(self) -> bool:
        if self.device_scores is not None:
            return self.device_scores
        device = getattr(self.embedder, "device", None)
        return device is not None and getattr(device, "type", "cpu") != "cpu"

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
            if self._on_device():
                return self._score_many([(video, decoded)], [digest])[0]
            return self._score(video, decoded, digest)
        except (ValueError, RuntimeError) as err:  # this video's failure, not the job's
            from .clip import DeviceFailure, is_device_error

            if is_device_error(err):
                raise DeviceFailure(f"the CLIP device failed on {video.video_id}: {err}; the "
                                    f"shard job stops unfinished, rerun it to redo it") from err
            logger.exception("video %s failed while embedding/scoring", video.video_id)
            return VideoRecord.failed(video.video_id, video.path,
                                      f"{type(err).__name__} while embedding/scoring: {err}",
                                      digest), []

    def _score_many(self, items: list[tuple[VideoItem, DecodedVideo]],
                    digests: list[str] | None = None
                    ) -> list[tuple[VideoRecord, list[QuestionRecord]]]:
        """Records of several videos: one batched CLIP pass over all their frames and texts.

        With device scores the patch tokens never leave the device: what comes back is the
        global embeddings (float32 [K, D] per video), the text embeddings and the raw semantic
        scores (float32 [K] per question). Otherwise the numpy path scores on the host.
        """
        import torch

        emb, cfg = self.embedder, self.config
        digests = digests or [content_hash(v.abs_path) for v, _ in items]
        queries = [[semantic_queries(q.question, q.options, cfg.saliences.option_queries)
                    for q in v.questions] for v, _ in items]
        flat = [t for per_video in queries for qs in per_video for t in qs]
        on_device = self._on_device()
        glob_d, patch_d = emb.embed_frames([dv.frames for _, dv in items])  # (sum K, D|T,D)
        text_d = emb.embed_texts_device(flat)  # (sum Q, D)
        out, f0, t0 = [], 0, 0
        for (video, dv), qs, digest in zip(items, queries, digests):
            k, nq = len(dv.frame_indices), sum(len(x) for x in qs)
            g, p = glob_d[f0:f0 + k], patch_d[f0:f0 + k]
            t = text_d[t0:t0 + nq]
            f0, t0 = f0 + k, t0 + nq
            if on_device:
                with torch.inference_mode():
                    raw = semantic_raw_device(g, p if cfg.saliences.patch_tokens else None, t,
                                              [len(x) for x in qs], cfg.saliences.aggregation)
                raws = list(raw.cpu().numpy().astype(np.float64))
                out.append(self._records_of(video, dv, digest, g.cpu().numpy(), None,
                                            t.cpu().numpy(), qs, raws))
            else:
                out.append(self._records_of(video, dv, digest, g.cpu().numpy(),
                                            p.cpu().numpy(), t.cpu().numpy(), qs))
        return out

    def _score(self, video: VideoItem, dv: DecodedVideo, digest: str
               ) -> tuple[VideoRecord, list[QuestionRecord]]:
        emb, cfg = self.embedder, self.config
        glob, patches = emb.embed_images(dv.frames)  # (K, D), (K, T, D)
        queries = [semantic_queries(q.question, q.options, cfg.saliences.option_queries)
                   for q in video.questions]
        text = emb.embed_texts([t for qs in queries for t in qs])  # (sum Q, D)
        return self._records_of(video, dv, digest, glob, patches, text, queries)

    def _records_of(self, video: VideoItem, dv: DecodedVideo, digest: str, glob: np.ndarray,
                    patches: np.ndarray | None, text: np.ndarray, queries: list[list[str]],
                    raws: list[np.ndarray] | None = None
                    ) -> tuple[VideoRecord, list[QuestionRecord]]:
        """The video record and its question records from the embeddings.

        Args:
            glob: float32 [K, D] normalised frame embeddings.
            patches: float32 [K, T, D] patch tokens (host path), or None with `raws`.
            text: float32 [sum Q, D] query embeddings, questions in order.
            queries: each question's queries.
            raws: float64 [K] raw semantic scores per question, already computed (device path).
        """
        cfg = self.config
        scene = scene_salience(glob, dv.frame_indices, dv.scenes,
                               cfg.saliences.scene_temperature)
        record = VideoRecord(
            video_id=video.video_id, path=video.path, content_hash=digest, fps=float(dv.fps),
            duration=float(dv.duration), num_frames=int(dv.num_frames),
            frame_indices=dv.frame_indices, timestamps=dv.timestamps, scenes=dv.scenes,
            frame_scene=scene.frame_scene, scene_rep=scene.scene_rep,
            embeddings=glob.astype(np.float16))
        out, start = [], 0
        for i, (q, qs) in enumerate(zip(video.questions, queries)):
            t = text[start:start + len(qs)]  # (Q, D); row 0 is the question itself
            start += len(qs)
            sal = question_saliences(scene, glob, patches, t, cfg.saliences, cfg.fusion,
                                     raw=None if raws is None else raws[i])
            out.append(QuestionRecord(
                video_id=video.video_id, question_id=q.question_id, question=q.question,
                options=list(q.options), answer=q.answer, problem_type=q.problem_type,
                text_embedding=t[0].astype(np.float16), **sal.arrays()))
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
