"""`videocfr select` for any strategy of the registry, and its harness outputs.

    videocfr select --cache C (--strategy SPEC | --checkpoint CKPT) --n N \
        (--selection-file SEL.json | --tspo-json TSPO.json | --addition NAME | ...)

`--strategy` takes every spec of evaluate's registry (`uniform`, `random`, `prior-topn`,
`prior-its@cfr:alpha=3` — BOLT's inverse transform sampling —, `aks`, `novelty`,
`scene-reps`, ...); `--checkpoint` a trained ReFoCUS selector (strategy `refocus`). Random
draws use `evaluate.strategies.sample_rng`, the generator `videocfr evaluate qa` uses, so both
choose the same frames for a seed. The selection file (cache_format.selections,
docs/selections.md) records the strategy spec and seed, or the checkpoint's path, step and the
sha256 of its weights.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm
from videocfr.cache_format import Cache, VideoRecord
from videocfr.cache_format.io import sha256_file
from videocfr.cache_format.selections import build_document, tspo_records, write_document

log = logging.getLogger(__name__)


def selectable(video: VideoRecord, qid: str, n: int, counts: dict[str, int]) -> bool:
    """Whether a question of `video` can get n frames; counts (and logs) why not.

    Args:
        counts: tallies, `failed_videos` and `k_lt_n` incremented in place.
    """
    if not video.ok:
        counts["failed_videos"] += 1
        return False
    if video.num_sampled < n:
        counts["k_lt_n"] += 1
        log.warning("%s/%s: K = %d < n = %d; no selection", video.video_id, qid,
                    video.num_sampled, n)
        return False
    return True


def strategy_selections(cache: Cache, spec: str, n: int, seed: int = 0
                        ) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, int]]:
    """Chosen positions of every question of a cache under a registry strategy spec.

    Returns:
        ({(video_id, question_id): int64 [n] sorted positions}, counts {selected, k_lt_n,
        failed_videos}).
    """
    from videocfr.evaluate.strategies import make_strategy, sample_rng, select

    fn = make_strategy(spec)  # an unknown name fails here, listing the registry
    counts = {"selected": 0, "k_lt_n": 0,
              "failed_videos": int(cache.manifest["counts"].get("skipped_questions", 0))}
    out: dict[tuple[str, str], np.ndarray] = {}
    video = None
    for vid, qid in tqdm(list(cache.keys()), desc=f"select {spec}", unit="question"):
        if video is None or video.video_id != vid:  # one video's record in memory at a time
            video = cache.video(vid)
        if not selectable(video, qid, n, counts):
            continue
        out[(vid, qid)] = select(fn, video, cache.question(vid, qid), n,
                                 sample_rng(seed, n, vid, qid))
    counts["selected"] = len(out)
    return out, counts


def choose(args: argparse.Namespace, cache: Cache) -> tuple[dict, dict, dict]:
    """The CLI's choice: (chosen positions, counts, the strategy record of the file)."""
    from .checkpoint import WEIGHTS, load_policy
    from .select import RefocusStrategy, select_all

    if bool(args.checkpoint) == bool(args.strategy):
        raise ValueError("give exactly one of --strategy SPEC (a registry strategy) or "
                         "--checkpoint CKPT (a trained selector)")
    if args.strategy:
        chosen, counts = strategy_selections(cache, args.strategy, args.n, args.seed)
        return chosen, counts, {"kind": "registry", "spec": args.strategy, "seed": args.seed}
    policy, state = load_policy(args.checkpoint, device=args.device)
    strategy = RefocusStrategy(policy, greedy=not args.sample, source=state["path"], state=state)
    chosen, counts = select_all(cache, strategy, args.n, seed=args.seed)
    return chosen, counts, {
        "kind": "selector", "spec": "refocus", "checkpoint": str(state["path"]),
        "checkpoint_sha256": sha256_file(Path(state["path"]) / WEIGHTS), "step": state["step"],
        "greedy": not args.sample, "seed": args.seed}


def write_outputs(args: argparse.Namespace, cache: Cache, chosen: dict, counts: dict,
                  strategy: dict) -> Path | None:
    """Write --selection-file / --tspo-json when asked; the path written, else None."""
    if not (args.selection_file or args.tspo_json):
        return None
    from importlib.metadata import version

    doc = build_document(cache, chosen, args.n, strategy, counts,
                         created_by=f"videocfr {version('videocfr')} select")
    if args.selection_file:
        return write_document(args.selection_file, doc)
    dst = Path(args.tspo_json)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{dst.name}")
    tmp.write_text(json.dumps(tspo_records(doc)), encoding="utf-8")
    tmp.replace(dst)
    return dst
