"""`videocfr cache re-fuse`: new consensus priors from a cache's stored saliences.

A team that did not pay for the decode + CLIP pass re-weights the sources another way (another
preset, other weights, another temperature). Every input of the fusion is in the cache (the stored
per-source saliences, the raw semantic scores, the scene representatives and, for the novelty
source, the frame embeddings), so a re-fuse reads the shards, fuses (cache_format/fusion.py, pure
numpy) and writes a new cache through the normal ShardWriter. No decode, no CLIP, no torch.

The new cache records the source config with the new `fusion` section and `refused_from` (the
source's config hash): it has its own config hash, so it is never mixed with its source. The
stored saliences are checked first (shapes, finite, in [0, 1], consistent with each other); a bad
one raises a SchemaError naming the shard, video and question. The output is staged in a hidden
sibling directory and renamed into place after its manifest is written: OUT either does not
exist or holds a whole cache.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import schema
from .fusion import (
    CLI_WEIGHT_FIELDS,
    CLI_WEIGHTS,
    FUSION_INPUTS,
    SALIENCES,
    SOURCES,
    FusionConfig,
    derive_sources,
    fuse_saliences,
)
from .io import fsync_dir
from .reader import Cache
from .records import QuestionRecord, VideoRecord
from .storage import local_only
from .writer import ShardWriter, finalize_cache

log = logging.getLogger(__name__)

RE_FUSED_FROM = "refused_from"  # config key: the source cache's config hash


def _str(f, name: str) -> list[str]:
    return f[name].asstr()[()].tolist()


def check_saliences(video: VideoRecord, q: QuestionRecord, where: str) -> None:
    """Check one question's stored saliences before they are fused again.

    Shapes equal the video's K; every value finite; each stored salience in [0, 1]; then each
    source's own check of fusion.SOURCES (uniform = 1; scene = 1 at the scene representatives;
    semantic = min-max(semantic_raw), METHOD §2).

    Raises:
        SchemaError naming `where` (shard), the video, the question and the salience.
    """
    who = f"{where}: video {q.video_id!r} question {q.question_id!r}"
    k = video.num_sampled
    inputs = {name: getattr(q, name) for name in FUSION_INPUTS}
    for name, arr in inputs.items():
        if arr.shape != (k,):
            raise schema.SchemaError(f"{who}: salience {name} has shape {arr.shape}, the video "
                                     f"has K = {k} frames")
        if not np.isfinite(arr).all():
            raise schema.SchemaError(f"{who}: salience {name} holds NaN or inf")
    for name in SALIENCES:
        arr = inputs[name]
        if arr.min() < 0 or arr.max() > 1:
            raise schema.SchemaError(f"{who}: salience {name} leaves [0, 1] "
                                     f"(min {arr.min():.4g}, max {arr.max():.4g})")
    for source in SOURCES:
        why = source.check(inputs, video.scene_rep) if source.check else None
        if why:
            raise schema.SchemaError(f"{who}: {why}")


def re_fused_config(source_config: dict, source_hash: str, fusion: FusionConfig) -> dict:
    """The config of a re-fused cache: the source's, with the new fusion and its origin."""
    config = copy.deepcopy(source_config)
    config["fusion"] = dataclasses.asdict(fusion)
    config[RE_FUSED_FROM] = source_hash
    return config


def fusion_from_cli(preset: str, weights: str | None, temperature: float | None,
                    source_config: dict | None = None) -> FusionConfig:
    """A FusionConfig from `--preset`, `--weights wu,ws,wr[,wn]` (fusion.CLI_WEIGHTS) and
    `--temperature`.

    Weights not given take the preset's; the source's semantic_top_frac is kept.
    """
    kwargs: dict = {"preset": preset}
    if weights is not None:
        low, high = len(SALIENCES), len(CLI_WEIGHT_FIELDS)
        counts = f"{low} or {high}" if high - low == 1 else f"{low} to {high}"
        fix = f"--weights {weights!r}: give {counts} numbers {CLI_WEIGHTS}"
        try:
            values = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ValueError(fix) from None
        if not low <= len(values) <= high:
            raise ValueError(fix)
        kwargs.update(zip(CLI_WEIGHT_FIELDS, values))
    if temperature is not None:
        kwargs["temperature"] = float(temperature)
    frac = ((source_config or {}).get("fusion") or {}).get("semantic_top_frac")
    if isinstance(frac, int | float) and not isinstance(frac, bool):
        kwargs["semantic_top_frac"] = float(frac)
    return FusionConfig(**kwargs)


def _shard_records(f, where: str, fusion: FusionConfig):
    """(video, questions, aliases) of one open shard, read whole and re-fused."""
    vids = _str(f, "videos/video_id")
    status = _str(f, "videos/status")
    fo = f["videos/frame_offset"][()]
    so = f["videos/scene_offset"][()]
    frames = {name: f[f"frames/{name}"][()] for name in
              ("index", "timestamp", "scene", "scene_rep", "embedding")}
    bounds = f["scenes/bounds"][()]
    qo = f["questions/frame_offset"][()]
    qrow = f["questions/video_row"][()]
    qf = {name: f[f"qframes/{name}"][()] for name in FUSION_INPUTS}
    text_emb = f["questions/text_embedding"][()]
    qtext = {name: _str(f, f"questions/{name}") for name in
             ("video_id", "question_id", "question", "options", "answer", "problem_type")}
    video_str = {name: _str(f, f"videos/{name}") for name in ("path", "content_hash", "error")}
    num = {name: f[f"videos/{name}"][()] for name in ("fps", "duration", "num_frames")}
    aliases: dict[int, list[str]] = {}
    for alias, row in zip(_str(f, "aliases/video_id"), f["aliases/video_row"][()].tolist()):
        aliases.setdefault(int(row), []).append(alias)
    n_video, n_q = len(vids), len(qrow)
    n_qf = qf[FUSION_INPUTS[0]].shape[0]
    if fo.shape != (n_video + 1,) or qo.shape != (n_q + 1,) or qo[-1] != n_qf:
        raise schema.SchemaError(f"{where}: offset tables do not match their tables")
    if n_q and (qrow.min() < 0 or qrow.max() >= n_video):
        raise schema.SchemaError(f"{where}: questions/video_row points outside the videos table")
    by_video: dict[int, list[int]] = {}
    for row, v in enumerate(qrow.tolist()):
        by_video.setdefault(v, []).append(row)
    for v in range(n_video):
        a, b = int(fo[v]), int(fo[v + 1])
        sa, sb = int(so[v]), int(so[v + 1])
        if status[v] != "ok":
            video = VideoRecord.failed(vids[v], video_str["path"][v],
                                       video_str["error"][v] or "failed",
                                       video_str["content_hash"][v])
            yield video, [], aliases.get(v, [])
            continue
        video = VideoRecord(
            video_id=vids[v], path=video_str["path"][v], content_hash=video_str["content_hash"][v],
            fps=float(num["fps"][v]), duration=float(num["duration"][v]),
            num_frames=int(num["num_frames"][v]), frame_indices=frames["index"][a:b],
            timestamps=frames["timestamp"][a:b], scenes=bounds[sa:sb],
            frame_scene=frames["scene"][a:b], scene_rep=frames["scene_rep"][a:b],
            embeddings=frames["embedding"][a:b])
        for name in fusion.derived_needed:
            if not np.isfinite(video.embeddings).all():
                raise schema.SchemaError(f"{where}: video {vids[v]!r}: frame embeddings hold "
                                         f"NaN or inf (the {name} source needs them)")
        derived = derive_sources(video.embeddings, fusion)
        questions = []
        for row in by_video.get(v, []):
            qa, qb = int(qo[row]), int(qo[row + 1])
            try:
                options = json.loads(qtext["options"][row])
            except json.JSONDecodeError as err:
                raise schema.SchemaError(f"{where}: question {qtext['question_id'][row]!r}: "
                                         f"options are not JSON ({err})") from None
            sal = {name: arr[qa:qb] for name, arr in qf.items()}
            q = QuestionRecord(
                video_id=qtext["video_id"][row], question_id=qtext["question_id"][row],
                question=qtext["question"][row], options=options, answer=qtext["answer"][row],
                problem_type=qtext["problem_type"][row], text_embedding=text_emb[row],
                prior=np.zeros(0, np.float32), **sal)
            check_saliences(video, q, where)
            q.prior = fuse_saliences(sal, video.scene_rep, fusion, derived)
            questions.append(q)
        yield video, questions, aliases.get(v, [])


def re_fuse_cache(source: str | Path, out: str | Path, fusion: FusionConfig,
                 max_videos: int | None = None) -> dict:
    """Re-fuse every prior of `source` with `fusion` into a new cache at `out`.

    Args:
        source: a finished cache (path or URL).
        out: a new directory (absent or empty); written whole or not at all.
        fusion: the new fusion.
        max_videos: videos per output shard file (default: the source config's, else 1000).

    Returns:
        The new cache's manifest.

    Raises:
        CacheError / SchemaError: unreadable source, bad saliences (named), non-empty `out`.
    """
    out = local_only(out, "the output of `videocfr cache re-fuse`")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise schema.CacheError(f"output {out} exists and is not an empty directory; refuse "
                                f"writes a new cache")
    src = Cache(source)
    config = re_fused_config(src.config, src.config_hash, fusion)
    if max_videos is None:
        shards_cfg = src.config.get("shards") if isinstance(src.config.get("shards"), dict) else {}
        max_videos = shards_cfg.get("max_videos", 1000)
        max_videos = max_videos if isinstance(max_videos, int) and max_videos > 0 else 1000
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".tmp-{out.name}.{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    t0 = time.perf_counter()
    n_questions = 0
    try:
        m = src.manifest
        with ShardWriter(stage, config, embed_dim=m["embed_dim"], model=m["model"],
                         library_versions=m["library_versions"], max_videos=max_videos,
                         video_root=m.get("video_root")) as writer:
            for i, path in enumerate(tqdm(src.shard_paths, desc="re-fuse", unit="shard")):
                where = str(path)
                for video, questions, aliases in _shard_records(src.file(i), where, fusion):
                    writer.add(video, questions, aliases=aliases)
                    n_questions += len(questions)
            writer.add_skipped(int(m["counts"].get("skipped_questions", 0)))
        manifest = finalize_cache(stage)
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(stage, out)
        fsync_dir(out.parent)
    finally:
        src.close()
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    log.info("re-fused %d questions of %s with preset %s in %.3f s", n_questions, source,
             fusion.preset, time.perf_counter() - t0)
    return manifest
