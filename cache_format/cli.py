"""`videocfr cache ...`: inspect, verify, merge and share prior caches (core install only).

The umbrella `videocfr` command (videocfr/cli.py) hands `cache` subcommands to `cache_main`,
with the two functions that need a stage: the cache's CLIP text tower (`search`) and the plot of
one video (`plot`). This package never imports a stage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .fusion import CLI_WEIGHTS, PRESETS
from .merge import merge_caches
from .reader import Cache
from .schema import CacheError
from .storage import as_path
from .verify import verify_cache, verify_shard


def _info(args) -> int:
    cache = Cache(args.cache)
    cache.keys()  # every shard's structure and ids checked before anything is reported
    m = cache.manifest
    info = {"path": str(cache.path), "schema_version": m["schema_version"],
            "config_hash": m["config_hash"], "model": m["model"], "embed_dim": m["embed_dim"],
            "counts": m["counts"], "shards": len(m["shards"]),
            "bytes": sum(s["bytes"] for s in m["shards"]), "library_versions":
            m["library_versions"], "failures": m["failures"], "config": m["config"]}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"cache        {info['path']}")
    print(f"schema       v{info['schema_version']}   config hash {info['config_hash']}")
    print(f"model        {m['model']['name']} ({m['model']['pretrained']}), D = {m['embed_dim']}")
    print(f"shards       {info['shards']} ({info['bytes'] / 2**20:.1f} MiB)")
    print("counts       " + ", ".join(f"{k} {v}" for k, v in sorted(m["counts"].items())))
    print("libraries    " + ", ".join(f"{k} {v}" for k, v in m["library_versions"].items()))
    print("config       " + json.dumps(m["config"], sort_keys=True))
    print(f"failures     {len(m['failures'])}")
    for fail in m["failures"]:
        print(f"  {fail['video_id']}: {fail['error']}")
    return 0


def _show(args) -> int:
    cache = Cache(args.cache)
    v = cache.video(args.video_id)
    out = {"video_id": args.video_id, "path": v.path, "content_hash": v.content_hash,
           "status": v.status, "error": v.error, "fps": v.fps, "duration": v.duration,
           "num_frames": v.num_frames, "frame_indices": v.frame_indices.tolist(),
           "timestamps": v.timestamps.tolist(), "scenes": v.scenes.tolist(),
           "frame_scene": v.frame_scene.tolist(), "scene_rep": v.scene_rep.tolist(),
           "questions": cache.question_ids(args.video_id)}
    if args.question is not None:
        q = cache.question(args.video_id, args.question)
        out["question"] = {
            "question_id": q.question_id, "question": q.question, "options": q.options,
            "answer": q.answer, "problem_type": q.problem_type,
            "saliences": {k: a.tolist() for k, a in q.saliences().items()},
            "semantic_raw": q.semantic_raw.tolist(), "prior": q.prior.tolist()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    np.set_printoptions(precision=3, suppress=True, linewidth=100)
    for key, value in out.items():
        if key != "question":
            print(f"{key:14s} {value}")
    if "question" in out:
        for key, value in out["question"].items():
            print(f"{key:14s} {value}")
    return 0


def _verify(args) -> int:
    path = as_path(args.cache)
    problems = verify_shard(path) if path.is_file() else verify_cache(path)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def _merge(args) -> int:
    manifest = merge_caches(args.caches, args.output, max_videos=args.max_videos)
    print(f"merged {len(args.caches)} caches into {args.output}: " +
          ", ".join(f"{k} {v}" for k, v in sorted(manifest["counts"].items())))
    return 0


def _re_fuse(args) -> int:
    from .re_fuse import fusion_from_cli, re_fuse_cache

    source = Cache(args.cache)
    fusion = fusion_from_cli(args.preset, args.weights, args.temperature, source.config)
    manifest = re_fuse_cache(args.cache, args.output, fusion)
    print(f"re-fused {manifest['counts']['questions']} priors of {args.cache} with preset "
          f"{fusion.preset} (weights {fusion.weights}, temperature {fusion.temperature}) into "
          f"{args.output}: config hash {manifest['config_hash']}")
    return 0


def _export(args) -> int:
    from .export import export_file

    summary = export_file(args.cache, args.video_r1, args.output)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    left = {k: summary[k] for k in ("no_prior", "failed_video", "duplicate_frames", "images")}
    print(f"exported frame_sets for {summary['exported']} of {summary['records']} records into "
          f"{args.output}; left unchanged: " + ", ".join(f"{k} {v}" for k, v in left.items()))
    if summary["examples"]:
        print(f"  keys not in the cache, e.g. {summary['examples']}")
    if not summary["matches_cache_prior"]:
        print(f"  note: the cache was fused with preset {summary['preset']}; the reference "
              f"trainer rebuilds the videocfr-ref prior of these sets, not the cache's prior")
    return 0


def _index(args) -> int:
    from .search import build_index

    meta = build_index(args.cache, flat_max=args.flat_max, nprobe=args.nprobe)
    print(f"indexed {meta['frames']} frames of {args.cache} ({meta['kind']}, D = "
          f"{meta['embed_dim']}, model {meta['model']['name']} ({meta['model']['pretrained']}))")
    return 0


def _search(args) -> int:
    from .search import FrameIndex

    cache = Cache(args.cache)
    index = FrameIndex.load(cache)  # check the index before loading a model
    # The query text is embedded with the cache's own CLIP model, which the precompute stage
    # resolves; the umbrella command passes it in (args.embedder).
    embedder = _wired(args, "embedder", "search")(cache, device=args.device,
                                                 checkpoint=args.checkpoint)
    hits = index.search(embedder.embed_texts([args.text]), top=args.top, nprobe=args.nprobe)[0]
    rows = [{"rank": r + 1, "video_id": h.video_id, "frame_index": h.frame_index,
             "time": h.time, "score": h.score} for r, h in enumerate(hits)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'rank':>4s}  {'score':>7s}  {'time':>9s}  {'frame':>7s}  video")
    for r in rows:
        print(f"{r['rank']:4d}  {r['score']:7.4f}  {r['time']:8.2f}s  {r['frame_index']:7d}  "
              f"{r['video_id']}")
    return 0


def _plot(args) -> int:
    plot = _wired(args, "plot", "plot")  # matplotlib and the frame decoder: the evaluate stage
    out = plot(Cache(args.cache), args.video_id, args.output, args.question, args.video_root)
    print(f"wrote {out}")
    return 0


def _wired(args, name: str, command: str):
    """A stage's function the umbrella command passed to cache_main (see the module doc)."""
    fn = getattr(args, name, None)
    if fn is None:
        raise CacheError(f"`cache {command}` needs a stage of videocfr; run it as "
                         f"`videocfr cache {command} ...`")
    return fn


def cache_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videocfr cache", description="inspect, check and "
                                     "combine prior caches")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="counts, config, model, failures")
    p.add_argument("cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)
    p = sub.add_parser("show", help="one video (and one question) as stored")
    p.add_argument("cache")
    p.add_argument("video_id")
    p.add_argument("--question", default=None, help="question id: add saliences and prior")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_show)
    p = sub.add_parser("verify", help="sha256, schema, shapes, sums, NaN/inf (cache or shard)")
    p.add_argument("cache")
    p.set_defaults(func=_verify)
    p = sub.add_parser("merge", help="merge caches of one config hash")
    p.add_argument("caches", nargs="+")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--max-videos", type=int, default=1000)
    p.set_defaults(func=_merge)
    p = sub.add_parser("re-fuse", aliases=["refuse"],  # `refuse`: the earlier spelling
                       help="new priors from the stored saliences (no decode, no CLIP)")
    p.add_argument("cache")
    p.add_argument("--preset", required=True, choices=PRESETS)
    p.add_argument("--weights", default=None, help=f"{CLI_WEIGHTS} (default: the preset's)")
    p.add_argument("--temperature", type=float, default=None, help="softmax tau (default 0.1)")
    p.add_argument("-o", "--output", required=True, help="new cache directory")
    p.set_defaults(func=_re_fuse)
    p = sub.add_parser("export", help="priors as frame_sets in Video-R1 JSON (reference trainer)")
    p.add_argument("cache")
    p.add_argument("--video-r1", required=True, metavar="IN.json", help="Video-R1 JSON / JSONL")
    p.add_argument("-o", "--output", required=True, metavar="OUT.json")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_export)
    p = sub.add_parser("index", help="faiss text-to-frame search index (a cache addition)")
    p.add_argument("cache")
    p.add_argument("--flat-max", type=int, default=200_000,
                   help="exact Flat index up to this many frames, IVF-PQ above")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query")
    p.set_defaults(func=_index)
    p = sub.add_parser("search", help="frames that match a text, with the cache's CLIP model")
    p.add_argument("cache")
    p.add_argument("text")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists (default: the index's)")
    p.add_argument("--device", default="cpu", help="torch device of the text tower")
    p.add_argument("--checkpoint", default=None,
                   help="local checkpoint of a cache built from a file (its sha256 is checked)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_search)
    p = sub.add_parser("plot", help="thumbnails, scene cuts, saliences and prior of one video")
    p.add_argument("cache")
    p.add_argument("video_id")
    p.add_argument("--question", default=None, help="question id (default: the video's first)")
    p.add_argument("--video-root", default=None, help="where the cache's video paths resolve")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.set_defaults(func=_plot)
    return parser


def cache_main(argv: list[str], *, embedder=None, plot=None) -> int:
    """`videocfr cache ...`; returns the exit status.

    Args:
        argv: the arguments after `cache`.
        embedder: (cache, device=, checkpoint=) -> an object with `embed_texts(list[str])`
            returning float32 [n, D] (`search` needs it; the umbrella command passes it).
        plot: (cache, video_id, output, question, video_root) -> the PNG path written (`plot`).
    """
    args = cache_parser().parse_args(argv)
    args.embedder, args.plot = embedder, plot
    try:
        return args.func(args)
    except (CacheError, KeyError, ValueError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `videocfr cache info ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
