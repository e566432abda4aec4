"""`videocfr precompute margins`: the data filter's margins, stored as the cache addition `margins`.

For every question of a cache, M random subsets of n candidates are shown to the frozen reward
VLM (vlm.scorer) and the margins m = z_answer - max_other z are stored; the trainer drops
questions with Var(m) < 0.21 (their answer does not depend on which frames are seen).

Shard-parallel like precompute: job i of N takes questions i, i+N, i+2N, ... (in the cache's key
order) and writes `additions/.margins-parts/part-{i:05d}-of-{N:05d}.h5` atomically; whenever all
N parts exist (the last job, or `--finalize`) they become the addition, checksummed by
`cache_format.additions` (so `videocfr cache verify` checks them). The addition's meta records
the VLM (`vlm`: `vlm_identity`) and the cache (`cache`: `cache_identity`) the margins were
computed with; training refuses an addition of another VLM than its reward's, or one copied from
another cache (`check_source`), naming both.

Part file schema (version 1), read back as hostile input (`read_part`): root attributes
`format` = "videocfr-margins", `version` = 1, `num_subsets` M, `subset_size` n, `seed`; datasets,
all hard links to plain datasets, nothing else:

| name | dtype | shape | meaning |
|---|---|---|---|
| video_id | str | [Q] | |
| question_id | str | [Q] | |
| status | str | [Q] | "ok" or "failed" |
| error | str | [Q] | why it failed ("" when ok) |
| subsets | int32 | [Q, M, n] | candidate positions shown (sorted; -1 when failed) |
| margins | float32 | [Q, M] | finite where ok, NaN where failed |
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm
from videocfr.cache_format import Cache, CacheError, SchemaError
from videocfr.cache_format.additions import load_addition, write_addition

log = logging.getLogger(__name__)

NAME = "margins"
VERSION = 1
FORMAT = "videocfr-margins"
PARTS_DIR = ".margins-parts"
DATASETS = {"video_id": "str", "question_id": "str", "status": "str", "error": "str",
            "subsets": "int", "margins": "float"}
MAX_ROWS = 50_000_000


def part_name(index: int, num: int) -> str:
    return f"part-{index:05d}-of-{num:05d}.h5"


def write_part(path: Path, keys: list[tuple[str, str]], subsets: np.ndarray, margins: np.ndarray,
               errors: list[str], meta: dict) -> None:
    """Write one part file atomically (temp name, fsync, rename)."""
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    string = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w", track_order=True) as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        for k in ("num_subsets", "subset_size", "seed"):
            f.attrs[k] = int(meta[k])
        f.create_dataset("video_id", data=np.array([k[0] for k in keys], dtype=object),
                         dtype=string)
        f.create_dataset("question_id", data=np.array([k[1] for k in keys], dtype=object),
                         dtype=string)
        f.create_dataset("status", data=np.array(["failed" if e else "ok" for e in errors],
                                                 dtype=object), dtype=string)
        f.create_dataset("error", data=np.array(errors, dtype=object), dtype=string)
        f.create_dataset("subsets", data=subsets.astype(np.int32))
        f.create_dataset("margins", data=margins.astype(np.float32))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_part(path: Path) -> tuple[dict, dict[tuple[str, str], np.ndarray], int]:
    """Read and check one part file (hostile input).

    Returns:
        (attrs, margins of the ok questions: key -> float32 [M], failed question count).

    Raises:
        SchemaError naming the file and what is wrong.
    """
    try:
        f = h5py.File(path, "r", locking=False)  # immutable; no lock daemon needed
    except OSError as err:
        raise SchemaError(f"{path} is not a readable HDF5 file: {err}") from err
    with f:
        if f.attrs.get("format") != FORMAT or int(f.attrs.get("version", -1)) != VERSION:
            raise SchemaError(f"{path}: not a version-{VERSION} margins file")
        attrs = {k: int(f.attrs[k]) for k in ("num_subsets", "subset_size", "seed")
                 if k in f.attrs}
        if len(attrs) != 3 or attrs["num_subsets"] < 2 or attrs["subset_size"] < 1:
            raise SchemaError(f"{path}: attributes num_subsets (>= 2), subset_size, seed needed")
        if set(f.keys()) != set(DATASETS):
            raise SchemaError(f"{path}: datasets {sorted(f.keys())}, expected {sorted(DATASETS)}")
        arrays = {}
        for name, kind in DATASETS.items():
            link = f.get(name, getlink=True)
            obj = f.get(name)
            if not isinstance(link, h5py.HardLink) or not isinstance(obj, h5py.Dataset):
                raise SchemaError(f"{path}: {name} must be a plain dataset (no links or groups)")
            if obj.shape[0] > MAX_ROWS:
                raise SchemaError(f"{path}: {name} has {obj.shape[0]} rows (limit {MAX_ROWS})")
            is_str = h5py.check_string_dtype(obj.dtype) is not None
            if (kind == "str") != is_str or (kind == "int" and obj.dtype.kind not in "iu") or (
                    kind == "float" and obj.dtype != np.float32):
                raise SchemaError(f"{path}: {name} has dtype {obj.dtype}, expected {kind}")
            arrays[name] = obj.asstr()[()] if is_str else obj[()]
    q, m, n = len(arrays["video_id"]), attrs["num_subsets"], attrs["subset_size"]
    for name, shape in {"question_id": (q,), "status": (q,), "error": (q,),
                        "subsets": (q, m, n), "margins": (q, m)}.items():
        if arrays[name].shape != shape:
            raise SchemaError(f"{path}: {name} has shape {arrays[name].shape}, expected {shape}")
    ok = arrays["status"] == "ok"
    if not set(np.unique(arrays["status"])) <= {"ok", "failed"}:
        raise SchemaError(f"{path}: status must be 'ok' or 'failed'")
    if not np.isfinite(arrays["margins"][ok]).all():
        raise SchemaError(f"{path}: an ok question has a NaN/inf margin")
    out = {(str(v), str(qid)): arrays["margins"][i] for i, (v, qid, good) in
           enumerate(zip(arrays["video_id"], arrays["question_id"], ok)) if good}
    return attrs, out, int((~ok).sum())


def vlm_identity(spec: str) -> str:
    """The reward VLM's identity as margins record it and training compares it.

    `tiny` and `tiny:<family>` name a family's tiny random model (`tiny` is Qwen2.5-VL's); a
    local checkpoint directory is its resolved absolute path; anything else (a hub id) is kept
    as given.
    """
    spec = str(spec)
    if spec == "tiny" or spec.startswith("tiny:"):
        return f"tiny:{spec.partition(':')[2] or 'qwen2_5_vl'}"
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec


def cache_identity(cache_dir: str | Path) -> dict:
    """What tells one cache from another: its path, config hash and a digest of its shards.

    `shards_sha256` is the sha256 of the manifest's shard checksums in order: two caches of the
    same config but other videos, questions or embeddings differ in it.
    """
    manifest = Cache(cache_dir).manifest
    digest = hashlib.sha256("\n".join(s["sha256"] for s in manifest["shards"]).encode())
    return {"path": str(Path(cache_dir).resolve()), "config_hash": manifest["config_hash"],
            "shards_sha256": digest.hexdigest()}


def check_source(cache_dir: str | Path, meta: dict, vlm: str | None) -> None:
    """Refuse margins computed with another VLM than `vlm`, or on another cache than this one.

    Args:
        cache_dir: the cache training names (the addition is read from it).
        meta: the addition's `meta` (its `vlm` and `cache`, recorded by `videocfr precompute
            margins`; an addition written before they were recorded is not checked for them).
        vlm: the training's reward VLM (`vlm_identity`), or None when training names none.

    Raises:
        CacheError naming both VLMs or both caches.
    """
    recorded = meta.get("vlm")
    if vlm is not None and isinstance(recorded, str) and recorded != vlm:
        raise CacheError(f"the margins addition of {cache_dir} was computed with the VLM "
                         f"{recorded!r}, but training names the VLM {vlm!r} (reward.model_path "
                         f"or reward.tiny); rerun `videocfr precompute margins --cache "
                         f"{cache_dir} --model ...` with training's VLM, or train with the one "
                         f"the margins were computed with")
    source = meta.get("cache")
    if isinstance(source, dict) and "shards_sha256" in source:
        mine = cache_identity(cache_dir)
        if source["shards_sha256"] != mine["shards_sha256"]:
            raise CacheError(f"the margins addition in {cache_dir} was computed on the cache "
                             f"{source.get('path')!r} (shards sha256 "
                             f"{str(source['shards_sha256'])[:16]}...), not on the cache "
                             f"training names, {mine['path']!r} (shards sha256 "
                             f"{mine['shards_sha256'][:16]}...); rerun `videocfr precompute "
                             f"margins --cache {cache_dir} ...` on it")


def load_margins(cache_dir: str | Path, vlm: str | None = None
                 ) -> dict[tuple[str, str], np.ndarray]:
    """(video_id, question_id) -> float32 [M] margins of every ok question of the addition.

    Args:
        cache_dir: the cache.
        vlm: the VLM the margins must have been computed with (`vlm_identity`; None: any).

    Raises:
        CacheError: no (or an altered) `margins` addition, or one computed with another VLM or
            on another cache (`check_source`); SchemaError: a malformed part.
    """
    addition = load_addition(cache_dir, NAME, VERSION)
    check_source(cache_dir, addition.meta, vlm)
    return read_margins(addition)


def read_margins(addition) -> dict[tuple[str, str], np.ndarray]:
    """The margins of a loaded, checked `margins` addition (`cache_format.additions.Addition`)."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for file in sorted(addition.files):
        _, part, _ = read_part(addition.path(file))
        out.update(part)
    return out


def subsets_for(key_index: int, k: int, m: int, n: int, seed: int) -> np.ndarray:
    """int64 [M, n]: M sorted random subsets of n of K candidates (seeded per question)."""
    rng = np.random.default_rng([seed, key_index])
    return np.sort(np.stack([rng.choice(k, size=n, replace=False) for _ in range(m)]), axis=1)


def run_job(cache_dir: str | Path, reward, *, num_subsets: int, subset_size: int, seed: int,
            num_shards: int = 1, shard_index: int = 0) -> Path:
    """Compute one shard's margins and write its part file.

    Args:
        cache_dir: a finished cache.
        reward: a `selector.rewards.MarginReward` (its `margins(samples, subsets)`).
        num_subsets, subset_size: M and n.
        seed: subsets are a function of (seed, question's index in the cache's key order).
        num_shards, shard_index: this job's slice.

    Returns:
        the part file's path.
    """
    from .data import SelectorSample, relative_times  # noqa: PLC0415

    cache = Cache(cache_dir)
    keys = list(cache.keys())
    mine = list(range(shard_index, len(keys), num_shards))
    m, n = num_subsets, subset_size
    subsets = np.full((len(mine), m, n), -1, np.int32)
    margins = np.full((len(mine), m), np.nan, np.float32)
    errors = []
    for row, i in enumerate(tqdm(mine, desc=f"margins {shard_index + 1}/{num_shards}",
                                 unit="question")):
        vid, qid = keys[i]
        video = cache.video(vid)
        if not video.ok:
            errors.append(f"video failed in precompute: {video.error}")
            continue
        if video.num_sampled < n:
            errors.append(f"K = {video.num_sampled} < subset size n = {n}")
            continue
        sample = SelectorSample(video=video, question=cache.question(vid, qid),
                                times=relative_times(video))
        subs = subsets_for(i, video.num_sampled, m, n, seed)
        values = reward.margins([sample] * m, list(subs))
        if np.isnan(values).any():
            errors.append("the scorer could not score it (frames not decodable or not a "
                          "multiple-choice question)")
            continue
        subsets[row], margins[row] = subs, values
        errors.append("")
    failed = sum(bool(e) for e in errors)
    if failed:
        log.warning("margins job %d: %d of %d questions failed (stored with their error)",
                    shard_index, failed, len(mine))
    parts = Path(cache_dir) / "additions" / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / part_name(shard_index, num_shards)
    write_part(path, [keys[i] for i in mine], subsets, margins, errors,
               {"num_subsets": m, "subset_size": n, "seed": seed})
    return path


def finalize(cache_dir: str | Path, num_shards: int, meta: dict) -> Path | None:
    """Turn all N part files into the `margins` addition; None while some are missing."""
    parts = Path(cache_dir) / "additions" / PARTS_DIR
    names = [part_name(i, num_shards) for i in range(num_shards)]
    missing = [p for p in names if not (parts / p).is_file()]
    if missing:
        log.info("margins: %d of %d parts still to compute (e.g. %s)", len(missing), num_shards,
                 missing[:3])
        return None
    attrs = {json.dumps(read_part(parts / p)[0], sort_keys=True) for p in names}
    if len(attrs) != 1:
        raise CacheError(f"margins parts in {parts} were made with different settings {attrs}; "
                         f"delete {parts} and rerun every shard")
    meta = {"cache": cache_identity(cache_dir), **meta}  # the cache the parts were computed on
    with write_addition(cache_dir, NAME, VERSION, {**meta, **json.loads(attrs.pop()),
                                                   "num_shards": num_shards}) as stage:
        for p in names:
            shutil.copyfile(parts / p, stage / p)
    shutil.rmtree(parts, ignore_errors=True)
    return Path(cache_dir) / "additions" / NAME


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videocfr precompute margins", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="a finished cache")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="reward VLM: checkpoint directory of a registered family")
    model.add_argument("--tiny-scorer", action="store_true", help="tiny random scorer (tests)")
    p.add_argument("--tiny-family", default="qwen2_5_vl",
                   help="family of the tiny scorer (vlm.families: qwen2_5_vl, qwen3_vl, qwen3_5)")
    p.add_argument("--video-root", default=None, help="where the cache's video paths resolve")
    p.add_argument("--num-subsets", type=int, default=8, help="M subsets per question")
    p.add_argument("--subset-size", type=int, default=8, help="n frames per subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=None, help="N jobs (default: SLURM or 1)")
    p.add_argument("--shard-index", type=int, default=None, help="run only job i (default: all)")
    p.add_argument("--finalize", action="store_true", help="only assemble finished parts")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--batch-size", type=int, default=8, help="subsets per scorer call")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `videocfr precompute margins`; 0 ok, 2 bad input."""
    from videocfr.cache_format.markers import shard_selection  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    try:
        num, index = shard_selection(args.num_shards, args.shard_index)  # the precompute rule
        if args.num_subsets < 2 or args.subset_size < 1:
            raise ValueError("--num-subsets must be >= 2 (a variance) and --subset-size >= 1")
        tiny = "tiny" if args.tiny_family == "qwen2_5_vl" else f"tiny:{args.tiny_family}"
        meta = {"model": args.model or tiny, "vlm": vlm_identity(args.model or tiny),
                "batch_size": args.batch_size}
        if not args.finalize:
            reward = _reward(args)
            for i in [index] if index is not None else range(num):
                run_job(args.cache, reward, num_subsets=args.num_subsets,
                        subset_size=args.subset_size, seed=args.seed, num_shards=num,
                        shard_index=i)
        out = finalize(args.cache, num, meta)
    except (CacheError, ValueError, FileNotFoundError) as err:
        print(f"videocfr precompute margins: error: {err}", file=sys.stderr)
        return 2
    if out is None:
        print("margins: parts still missing; run the other shards (or --finalize later)")
        return 0
    found = load_margins(args.cache)
    var = np.array([np.var(m) for m in found.values()]) if found else np.zeros(0)
    print(f"margins addition written: {out} ({len(found)} questions scored; Var(m) >= 0.21 for "
          f"{int((var >= 0.21).sum())}, median Var(m) "
          f"{float(np.median(var)) if len(var) else float('nan'):.3f})")
    return 0


def _reward(args):
    from .rewards import frozen_scorer_class  # noqa: PLC0415

    FrozenScorer = frozen_scorer_class()  # noqa: N806

    from videocfr.vlm.decoders import cache_decoder  # noqa: PLC0415
    from videocfr.vlm.video import resolve_video_root  # noqa: PLC0415

    from .rewards import CandidateFrames, MarginReward  # noqa: PLC0415

    scorer = (FrozenScorer.tiny(seed=args.seed, family=args.tiny_family) if args.tiny_scorer else
              FrozenScorer.from_pretrained(args.model, device=args.device, dtype=args.dtype))
    cache = Cache(args.cache)
    root = resolve_video_root(cache, args.video_root)
    frames = CandidateFrames(root, decoder=cache_decoder(cache.config))
    return MarginReward(scorer, frames, batch_size=args.batch_size)
