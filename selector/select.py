"""Inference with a trained selector: the `refocus` strategy and `videocfr select`.

Strategy: evaluate's registry functions take `(video, question, n, rng)`, so a checkpoint is
bound first::

    from videocfr.selector.select import load_refocus_strategy
    load_refocus_strategy("runs/refocus/checkpoints/step-002000")   # registers "refocus"
    evaluate.strategies.select("refocus", video, question, 8, rng)

Evaluation CLIs add the option with `add_refocus_argument(parser)` and call
`apply_refocus_argument(args)` after parsing (`--refocus-checkpoint CKPT`).

`videocfr select --cache C --checkpoint CKPT --n 8 (--addition NAME | --video-r1-json IN -o OUT)`
writes the chosen candidates of every question: as a cache addition (HDF5 `selections.h5`:
video_id, question_id str [Q]; positions int32 [Q, n]; frame_indices int64 [Q, n]) or into a
copy of a Video-R1 JSON (each video record gains `refocus_frames`, the chosen file frame numbers,
and `refocus_positions`), so CF-GRPO or any trainer can read the selection. `--strategy SPEC`
chooses with any registry strategy instead of a checkpoint, and `--selection-file` /
`--tspo-json` write the harness forms (selector/select_file.py, docs/selections.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm
from videocfr.cache_format import Cache, CacheError, QuestionRecord, VideoRecord
from videocfr.cache_format.keys import video_r1_key

from .checkpoint import check_embedding_model, embedding_model_of, load_policy
from .data import SelectorSample, make_batch, relative_times
from .policy import FrameSelector
from .select_file import selectable

log = logging.getLogger(__name__)
SELECTIONS_VERSION = 1


class RefocusStrategy:
    """A trained selector as an evaluate strategy `(video, question, n, rng) -> int64 [n]`.

    Args:
        policy: the loaded FrameSelector.
        greedy: argmax at every step (deterministic); False samples, seeded from `rng`.
        source: where the policy came from (for messages).
        state: the checkpoint's state.json (its `embedding_model`, for `check_cache`).
    """

    def __init__(self, policy: FrameSelector, greedy: bool = True, source: str = "",
                 state: dict | None = None):
        self.policy = policy
        self.greedy = greedy
        self.source = source
        self.state = state or {}
        self.__name__ = "refocus"

    def check_cache(self, cache: Cache) -> None:
        """Refuse a cache whose embedding model is not the one the checkpoint was trained on."""
        check_embedding_model({"path": self.source, **self.state}, cache.path,
                              embedding_model_of(cache.manifest))

    def choose(self, samples: list[SelectorSample], n: int, rng: np.random.Generator | None
               = None) -> np.ndarray:
        """int64 [B, n]: sorted positions for a batch of samples (each with K >= n)."""
        dim = self.policy.config.embed_dim
        for s in samples:
            if s.video.embeddings.shape[1] != dim:
                raise ValueError(f"selector {self.source} was trained on D={dim} embeddings; "
                                 f"video {s.video.video_id!r} has D="
                                 f"{s.video.embeddings.shape[1]} (another CLIP model)")
        gen = None
        if not self.greedy:
            seed = int((rng or np.random.default_rng()).integers(2**63 - 1))
            gen = torch.Generator().manual_seed(seed)
        device = next(self.policy.parameters()).device
        with torch.no_grad():
            sel = self.policy.sample(make_batch(samples).to(device), n, greedy=self.greedy,
                                     generator=gen)
        return sel.positions.cpu().numpy().astype(np.int64)

    def __call__(self, video: VideoRecord, question: QuestionRecord, n: int,
                 rng: np.random.Generator) -> np.ndarray:
        if not video.ok:
            raise ValueError(f"video {video.video_id!r} failed in precompute ({video.error})")
        if not 1 <= n <= video.num_sampled:
            raise ValueError(f"budget n={n} for video {video.video_id!r} must be in "
                             f"[1, K={video.num_sampled}]")
        sample = SelectorSample(video=video, question=question, times=relative_times(video))
        return self.choose([sample], n, rng)[0]


def load_refocus_strategy(checkpoint: str | Path, name: str = "refocus", greedy: bool = True,
                          device: str = "cpu") -> RefocusStrategy:
    """Load a checkpoint and register it in evaluate's strategy registry as `name`.

    A strategy of the same name registered by an earlier call is replaced; any other strategy
    of that name is an error.
    """
    from videocfr.evaluate import strategies  # noqa: PLC0415

    policy, state = load_policy(checkpoint, device=device)
    strategy = RefocusStrategy(policy, greedy=greedy, source=state["path"], state=state)
    if isinstance(strategies.STRATEGIES.get(name), RefocusStrategy):
        del strategies.STRATEGIES[name]
    strategies.register(name)(strategy)
    return strategy


def add_refocus_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--refocus-checkpoint` to an evaluation CLI."""
    parser.add_argument("--refocus-checkpoint", default=None,
                        help="a selector checkpoint (or run directory): registers strategy "
                             "`refocus`")


def apply_refocus_argument(args: argparse.Namespace) -> RefocusStrategy | None:
    """Register `refocus` when `--refocus-checkpoint` was given (checked against `args.cache`,
    when the CLI has one: a checkpoint of another embedding model is refused)."""
    ckpt = getattr(args, "refocus_checkpoint", None)
    if not ckpt:
        return None
    strategy = load_refocus_strategy(ckpt)
    if isinstance(getattr(args, "cache", None), str):
        strategy.check_cache(Cache(args.cache))
    return strategy


def select_all(cache: Cache, strategy: RefocusStrategy, n: int, batch_size: int = 64,
               seed: int = 0) -> tuple[dict, dict[str, int]]:
    """Chosen positions of every question of a cache.

    Returns:
        ({(video_id, question_id): int64 [n]}, counts {selected, k_lt_n, failed_videos}).

    Raises:
        ValueError: the checkpoint was trained on another embedding model than the cache's.
    """
    strategy.check_cache(cache)
    rng = np.random.default_rng(seed)
    counts = {"selected": 0, "k_lt_n": 0,
              "failed_videos": int(cache.manifest["counts"].get("skipped_questions", 0))}
    out, pending = {}, []
    videos: dict[str, VideoRecord] = {}

    def flush():
        if pending:
            for s, pos in zip(pending, strategy.choose(pending, n, rng)):
                out[s.key] = pos
            pending.clear()

    for vid, qid in tqdm(list(cache.keys()), desc="select", unit="question"):
        video = videos.get(vid) or videos.setdefault(vid, cache.video(vid))
        if not selectable(video, qid, n, counts):
            continue
        pending.append(SelectorSample(video=video, question=cache.question(vid, qid),
                                      times=relative_times(video)))
        if len(pending) >= batch_size:
            flush()
    flush()
    counts["selected"] = len(out)
    return out, counts


def write_selections_addition(cache_dir: str | Path, name: str, chosen: dict, n: int,
                              meta: dict) -> Path:
    """Store selections as a cache addition (see the module docstring for the schema)."""
    from videocfr.cache_format.additions import write_addition  # noqa: PLC0415

    cache = Cache(cache_dir)
    keys = sorted(chosen)
    frames = [cache.video(v).frame_indices[chosen[(v, q)]] for v, q in keys]
    string = h5py.string_dtype("utf-8")
    with write_addition(cache_dir, name, SELECTIONS_VERSION, {**meta, "n": n}) as stage:
        with h5py.File(stage / "selections.h5", "w", track_order=True) as f:
            f.attrs["format"] = "videocfr-selections"
            f.attrs["version"] = SELECTIONS_VERSION
            f.create_dataset("video_id", data=np.array([k[0] for k in keys], object),
                             dtype=string)
            f.create_dataset("question_id", data=np.array([k[1] for k in keys], object),
                             dtype=string)
            f.create_dataset("positions", data=np.array([chosen[k] for k in keys],
                                                        np.int32).reshape(-1, n))
            f.create_dataset("frame_indices", data=np.array(frames, np.int64).reshape(-1, n))
    return Path(cache_dir) / "additions" / name


def load_selections(cache_dir: str | Path, name: str) -> dict[tuple[str, str], np.ndarray]:
    """(video_id, question_id) -> int64 [n] chosen file frame numbers, from a selections
    addition (checked: sha256 by the addition, then datasets, dtypes and shapes here).

    Raises:
        CacheError / SchemaError naming what is missing or malformed.
    """
    from videocfr.cache_format import SchemaError  # noqa: PLC0415
    from videocfr.cache_format.additions import load_addition  # noqa: PLC0415

    path = load_addition(cache_dir, name, SELECTIONS_VERSION).path("selections.h5")
    want = {"video_id": "S", "question_id": "S", "positions": "i", "frame_indices": "i"}
    with h5py.File(path, "r", locking=False) as f:  # immutable; no lock daemon needed
        if set(f.keys()) != set(want):
            raise SchemaError(f"{path}: datasets {sorted(f.keys())}, expected {sorted(want)}")
        data = {}
        for key, kind in want.items():
            obj = f.get(key)
            if not isinstance(f.get(key, getlink=True), h5py.HardLink) or not isinstance(
                    obj, h5py.Dataset):
                raise SchemaError(f"{path}: {key} must be a plain dataset")
            is_str = h5py.check_string_dtype(obj.dtype) is not None
            if (kind == "S") != is_str or (kind == "i" and obj.dtype.kind not in "iu"):
                raise SchemaError(f"{path}: {key} has dtype {obj.dtype}")
            data[key] = obj.asstr()[()] if is_str else obj[()]
    q = len(data["video_id"])
    n = data["frame_indices"].shape[1] if data["frame_indices"].ndim == 2 else -1
    if (data["question_id"].shape != (q,) or data["frame_indices"].shape != (q, n)
            or data["positions"].shape != (q, n) or n < 1):
        raise SchemaError(f"{path}: shapes do not agree ({q} questions)")
    return {(str(v), str(qid)): data["frame_indices"][i].astype(np.int64)
            for i, (v, qid) in enumerate(zip(data["video_id"], data["question_id"]))}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videocfr select", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True)
    p.add_argument("--checkpoint", help="selector checkpoint or run directory (refocus)")
    p.add_argument("--strategy", help="instead: a registry strategy spec (uniform, random, "
                                      "prior-topn, prior-its@cfr:alpha=3, aks, novelty, ...)")
    p.add_argument("--n", type=int, required=True, help="frames to choose per question")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--addition", help="write a cache addition of this name (e.g. refocus-n8)")
    out.add_argument("--video-r1-json", help="a Video-R1 JSON to copy with the selections")
    out.add_argument("--selection-file", help="write a selection file for harnesses "
                                              "(docs/selections.md; lmms-eval reads it)")
    out.add_argument("--tspo-json", help="write TSPO's frame_idx JSON (its lmms-eval wrappers)")
    p.add_argument("-o", "--output", help="output JSON (with --video-r1-json)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy picks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `videocfr select`; 0 ok, 2 bad input."""
    args = build_parser().parse_args(argv)
    try:
        if args.video_r1_json and not args.output:
            raise ValueError("--video-r1-json needs -o/--output for the copy with selections")
        if args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}")
        from .select_file import choose, write_outputs  # noqa: PLC0415

        if args.video_r1_json and not args.checkpoint:
            raise ValueError("--video-r1-json writes refocus_frames: use it with --checkpoint")
        cache = Cache(args.cache)
        chosen, counts, strategy = choose(args, cache)
        meta = {**{k: v for k, v in strategy.items() if k != "kind"}, "counts": counts}
        where = write_outputs(args, cache, chosen, counts, strategy)
        if where is not None:
            pass
        elif args.addition:
            where = write_selections_addition(args.cache, args.addition, chosen, args.n, meta)
        else:
            where = _write_video_r1(cache, Path(args.video_r1_json), Path(args.output), chosen,
                                    counts)
    except (CacheError, ValueError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"videocfr select: error: {err}", file=sys.stderr)
        return 2
    print(f"selected n={args.n} for {counts['selected']} questions -> {where} (skipped: K < n "
          f"{counts['k_lt_n']}, failed videos {counts['failed_videos']}"
          + (f", records not in the cache {counts['not_in_cache']}" if "not_in_cache" in counts
             else "") + ")")
    return 0


def _write_video_r1(cache: Cache, src: Path, dst: Path, chosen: dict, counts: dict) -> Path:
    records = json.loads(src.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ValueError(f"{src}: a Video-R1 JSON is a list of records")
    counts["not_in_cache"] = 0
    videos: dict[str, VideoRecord] = {}
    for rec in records:
        key = (video_r1_key(rec) if isinstance(rec, dict) and {"path", "problem_id"} <= set(rec)
               else None)
        if key is None or key not in chosen:
            counts["not_in_cache"] += 1  # image records, failed videos, K < n, other data
            continue
        video = videos.get(key[0]) or videos.setdefault(key[0], cache.video(key[0]))
        rec["refocus_positions"] = chosen[key].tolist()
        rec["refocus_frames"] = video.frame_indices[chosen[key]].tolist()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{dst.name}")
    tmp.write_text(json.dumps(records, indent=1), encoding="utf-8")
    tmp.replace(dst)
    return dst
