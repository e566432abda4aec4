"""`videocfr cache export`: a cache's priors as `frame_sets` in Video-R1 / VideoCFR JSON.

The VideoCFR reference trainer reads, per record, the Video-R1 fields (`problem_id`, `problem`,
`options`, `solution`, `problem_type`, `data_type`, `path`) and `frame_sets = {uniform, scene,
semantic}`: lists of frame indices. It rebuilds its prior from them with METHOD §3's
`videocfr-ref` arithmetic: over the sorted distinct uniform frames, weight 0.1 + 1[scene] +
3[semantic], normalised. The export writes those sets from the cache's sources (all K sampled
frames, the scene representatives, the top ⌈frac·K⌉ frames by raw semantic score), so:

- for a cache fused with preset `videocfr-ref` (default weights), the reference trainer's prior
  equals the cache's prior;
- for a `cfr` / `cfr-novelty` cache, the sets are the same sources seen through the reference's
  indicator arithmetic: the trainer gets the `videocfr-ref` prior of those sources, not the
  cache's softmax prior (the summary says `matches_cache_prior: false`).

Records are mapped to cache keys as precompute's Video-R1 adapter keys them
(cache_format/keys.py). Image records, records whose video failed, whose key is not in the cache,
or whose sampled frames repeat a frame index (the reference de-duplicates indices, so its prior
would have fewer than K entries) are left unchanged and counted. A missing `data_type` or
`problem_type` is filled in (the reference trainer indexes both).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import schema
from .fusion import PRESET_WEIGHTS, WEIGHT_FIELDS, frame_sets
from .io import commit_file, tmp_path_for
from .keys import is_image_record, video_id_from_path
from .reader import Cache

log = logging.getLogger(__name__)

REF_WEIGHTS = PRESET_WEIGHTS["videocfr-ref"]


@dataclass
class ExportSummary:
    """What an export did, record by record.

    Attributes:
        records: records read.
        exported: records given `frame_sets`.
        no_prior: video records whose key is not in the cache (left unchanged).
        failed_video: records whose video failed in precompute (left unchanged).
        duplicate_frames: records whose video samples one frame index twice (left unchanged).
        images: image records (left unchanged).
        preset: the cache's fusion preset.
        matches_cache_prior: the reference trainer's prior equals the cache's prior.
        examples: a few unmatched keys, for the log.
    """

    records: int = 0
    exported: int = 0
    no_prior: int = 0
    failed_video: int = 0
    duplicate_frames: int = 0
    images: int = 0
    preset: str = ""
    matches_cache_prior: bool = False
    examples: list = field(default_factory=list)


class _KeyIndex:
    """Every (video_id, question_id) of a cache with what the sets are built from, read once."""

    def __init__(self, cache: Cache):
        self.entries: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.failed: set[str] = set()
        for i, shard in enumerate(cache.shard_paths):
            f = cache.file(i)
            vids = f["videos/video_id"].asstr()[()]
            status = f["videos/status"].asstr()[()]
            self.failed.update(str(v) for v, s in zip(vids, status) if s != "ok")
            fo = f["videos/frame_offset"][()]
            index, rep = f["frames/index"][()], f["frames/scene_rep"][()]
            qo, raw = f["questions/frame_offset"][()], f["qframes/semantic_raw"][()]
            rows = f["questions/video_row"][()]
            if rows.size and (rows.min() < 0 or rows.max() >= len(vids)):
                raise schema.SchemaError(f"{shard}: questions/video_row out of range")
            qv = f["questions/video_id"].asstr()[()]
            qq = f["questions/question_id"].asstr()[()]
            for q, (vid, qid, row) in enumerate(zip(qv, qq, rows.tolist())):
                a, b = int(fo[row]), int(fo[row + 1])
                qa, qb = int(qo[q]), int(qo[q + 1])
                if qb - qa != b - a:
                    raise schema.SchemaError(f"{shard}: question {qid!r} of video {vid!r} has "
                                             f"{qb - qa} saliences for {b - a} frames")
                self.entries[(str(vid), str(qid))] = (index[a:b], rep[a:b], raw[qa:qb])
        self.videos = {v for v, _ in self.entries}


def read_records(path: str | Path) -> tuple[list, bool]:
    """(records, is_jsonl) of a JSON list or JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"export input {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            return json.loads(text), False
        return [json.loads(line) for line in text.splitlines() if line.strip()], True
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from None


def write_records(path: str | Path, records: list, jsonl: bool) -> None:
    """Write records atomically (temp file, fsync, rename), keeping each record's key order."""
    final = Path(path)
    tmp = tmp_path_for(final)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            if jsonl:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            else:
                json.dump(records, f, ensure_ascii=False, indent=2)
                f.write("\n")
        commit_file(tmp, final)
    finally:
        if tmp.exists():
            os.unlink(tmp)


def export_records(cache: Cache, records: list, where: str = "input"
                   ) -> tuple[list, ExportSummary]:
    """Add `frame_sets` to every Video-R1 record that has a prior in `cache`.

    Args:
        cache: the cache.
        records: Video-R1 records (dicts), not modified.
        where: the input's name, for messages.

    Returns:
        (new records, summary).

    Raises:
        ValueError: a record that is not an object, or a video record without path/problem_id.
        CacheError: video records exist but none matches a key of the cache.
    """
    fusion = cache.config.get("fusion") if isinstance(cache.config.get("fusion"), dict) else {}
    frac = fusion.get("semantic_top_frac", 0.25)
    preset = str(fusion.get("preset", "cfr"))
    weights = tuple(float(fusion.get(k, d)) for k, d in zip(WEIGHT_FIELDS, REF_WEIGHTS))
    summary = ExportSummary(preset=preset,
                            matches_cache_prior=preset == "videocfr-ref" and weights == REF_WEIGHTS)
    index = _KeyIndex(cache)
    out = []
    for i, rec in enumerate(records):
        summary.records += 1
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: record {i} (0-based) is a {type(rec).__name__}, not a "
                             f"JSON object")
        if is_image_record(rec):
            summary.images += 1
            out.append(rec)
            continue
        if rec.get("path") is None or rec.get("problem_id") is None:
            raise ValueError(f"{where}: record {i} (0-based) has no 'path' or 'problem_id'; a "
                             f"Video-R1 video record needs both")
        key = (video_id_from_path(str(rec["path"])), str(rec["problem_id"]))
        entry = index.entries.get(key)
        if entry is None:
            if key[0] in index.failed:
                summary.failed_video += 1
            else:
                summary.no_prior += 1
                if len(summary.examples) < 5:
                    summary.examples.append(list(key))
            out.append(rec)
            continue
        frames, rep, raw = entry
        if np.unique(frames).shape[0] != frames.shape[0]:
            summary.duplicate_frames += 1
            out.append(rec)
            continue
        new = dict(rec)
        new["frame_sets"] = frame_sets(raw, rep, frames, frac)
        new.setdefault("data_type", "video")
        if not new.get("problem_type"):
            new["problem_type"] = "multiple choice" if new.get("options") else "free-form"
        out.append(new)
        summary.exported += 1
    video_records = summary.records - summary.images
    if video_records and not summary.exported and not summary.failed_video:
        sample = [list(k) for k in list(index.entries)[:3]]
        raise schema.CacheError(
            f"no record of {where} matches a key of cache {cache.path}: e.g. record keys "
            f"{summary.examples[:3]} (video id = path without './' and extension, question id = "
            f"problem_id), cache keys look like {sample}. Export the dataset this cache was "
            f"built from.")
    if not summary.matches_cache_prior:
        log.warning("cache %s was fused with preset %s (weights %s): the reference trainer "
                    "will rebuild the videocfr-ref prior of the exported sets, not this cache's "
                    "prior", cache.path, preset, weights)
    return out, summary


def export_file(cache_path: str | Path, in_path: str | Path, out_path: str | Path) -> dict:
    """`videocfr cache export CACHE --video-r1 IN -o OUT`; returns the summary as a dict."""
    records, jsonl = read_records(in_path)
    if not isinstance(records, list):
        raise ValueError(f"{in_path}: expected a JSON list of records (or JSONL)")
    cache = Cache(cache_path)
    try:
        out, summary = export_records(cache, records, where=str(in_path))
    finally:
        cache.close()
    write_records(out_path, out, jsonl)
    return asdict(summary)
