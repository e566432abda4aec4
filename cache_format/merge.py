"""`videocfr cache merge`: join caches built with the same config into one."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from .reader import Cache
from .records import QuestionRecord, VideoRecord
from .schema import CacheError
from .writer import ShardWriter, finalize_cache

log = logging.getLogger(__name__)


def merge_caches(sources: list[str | Path], out: str | Path, max_videos: int = 1000) -> dict:
    """Merge caches of one config hash into `out`, de-duplicating videos by content hash.

    A video present in several caches (same content hash) is kept once: under its first id, with
    the other ids as aliases; questions are joined, the first copy of a repeated question kept.

    Args:
        sources: cache directories, in priority order.
        out: a new (absent or empty) directory.
        max_videos: videos per output shard file.

    Returns:
        The manifest of the merged cache.

    Raises:
        CacheError: differing config hashes, one id with two contents, or a non-empty `out`.
    """
    if len(sources) < 2:
        raise ValueError("merge needs at least two caches")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CacheError(f"output {out} is not empty; merge writes a new cache")
    caches = [Cache(s) for s in sources]
    first = caches[0]
    for c in caches[1:]:
        if c.config_hash != first.config_hash:
            raise CacheError(f"cannot merge {c.path} (config hash {c.config_hash}) into "
                             f"{first.path} (config hash {first.config_hash}): only caches built "
                             f"with the same precompute config merge; re-run precompute instead")
    videos: dict[str, VideoRecord] = {}
    questions: dict[str, dict[tuple[str, str], QuestionRecord]] = {}
    aliases: dict[str, list[str]] = {}
    canonical_of: dict[str, str] = {}  # any known id -> canonical id
    by_hash: dict[str, str] = {}
    skipped = 0
    for cache in caches:
        skipped += cache.manifest["counts"].get("skipped_questions", 0)
        for vid in tqdm(sorted(cache.video_ids()), desc=f"merge {cache.path.name}", unit="video"):
            rec = cache.video(vid)
            h = rec.content_hash
            if vid in canonical_of:
                canon = canonical_of[vid]
                if h != videos[canon].content_hash:
                    raise CacheError(f"video id {vid!r} names different files in the caches "
                                     f"(content hash {videos[canon].content_hash or 'none'} vs "
                                     f"{h or 'none'}); rename one before merging")
                if not videos[canon].ok and rec.ok and canon == vid:
                    videos[canon] = rec  # a later cache decoded what an earlier one could not
            elif h and h in by_hash:
                canon = by_hash[h]
                canonical_of[vid] = canon
                aliases[canon].append(vid)
            else:
                canon = vid
                canonical_of[vid] = vid
                videos[vid], questions[vid], aliases[vid] = rec, {}, []
                if h:
                    by_hash[h] = vid
            for qid in cache.question_ids(vid):
                q = cache.question(vid, qid)
                questions[canon].setdefault(q.key, q)
    manifest0 = first.manifest
    with ShardWriter(out, manifest0["config"], embed_dim=manifest0["embed_dim"],
                     model=manifest0["model"], library_versions=manifest0["library_versions"],
                     max_videos=max_videos, video_root=manifest0.get("video_root")) as writer:
        for vid in sorted(videos):
            qs = list(questions[vid].values()) if videos[vid].ok else []
            writer.add(videos[vid], qs, aliases=sorted(a for a in aliases[vid] if a != vid))
        writer.add_skipped(skipped)
    for cache in caches:
        cache.close()
    return finalize_cache(out)
