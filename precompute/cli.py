"""`videocfr precompute`: build (or resume) a prior cache.

    videocfr precompute --config configs/precompute/demo.yaml --dataset demo --out caches/demo
    videocfr precompute ... --num-shards 64 --shard-index 3     # one job (SLURM array task)
    videocfr precompute ... --num-shards 64 --finalize          # write the manifest afterwards
    videocfr precompute ... --num-shards 8 --engine ray         # all jobs on a Ray cluster
    videocfr precompute margins --cache C --model M ...          # ReFoCUS margins (its --help)

Without --shard-index every unfinished job runs here (or on Ray); finished jobs are skipped
without loading the model. Under a SLURM array, --num-shards and --shard-index default to
SLURM_ARRAY_TASK_COUNT and SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN. Whenever all jobs are
done, the manifest is written (the last job of an array does it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

logger = logging.getLogger(__name__)


def slurm_defaults(env: dict | None = None) -> tuple[int | None, int | None]:
    """(num_shards, shard_index) from a SLURM array task's environment, (None, None) outside."""
    env = os.environ if env is None else env
    count, task = env.get("SLURM_ARRAY_TASK_COUNT"), env.get("SLURM_ARRAY_TASK_ID")
    if count is None or task is None:
        return None, None
    first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    return int(count), int(task) - first


def _quiet_open_clip(record: logging.LogRecord) -> bool:
    """Drop open_clip's INFO chatter (it logs through the root logger); keep its warnings."""
    return not (record.levelno < logging.WARNING and "open_clip" in record.pathname)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videocfr precompute", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="precompute YAML (configs/precompute/*.yaml)")
    p.add_argument("--dataset", required=True,
                   help="dataset name (configs/datasets/<name>.yaml) or path to a dataset YAML")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--num-shards", type=int, default=None,
                   help="number of shard jobs N (default: SLURM_ARRAY_TASK_COUNT or 1)")
    p.add_argument("--shard-index", type=int, default=None,
                   help="run only job i in [0, N) (default: from SLURM, else all jobs)")
    p.add_argument("--finalize", action="store_true",
                   help="only write manifest.json from finished jobs (error naming missing ones)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run the jobs in this process (local) or on Ray")
    p.add_argument("--device", default=None, help="override clip.device (cpu, cuda, cuda:1)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 unfinished jobs remain, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["margins"]:  # ReFoCUS's data filter: a job of the selector trainer
        from train.selector.margins import main as margins_main  # noqa: PLC0415

        return margins_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_open_clip)
    from cache_format import CacheError

    from .datasets import DatasetError

    try:
        return _run(args)
    except (CacheError, DatasetError, ValueError, FileNotFoundError) as err:
        print(f"videocfr precompute: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"videocfr precompute: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from .config import PrecomputeConfig
    from .datasets import load_dataset
    from .job import Precomputer, run_local, run_ray

    slurm_n, slurm_i = slurm_defaults()
    num = args.num_shards if args.num_shards is not None else (slurm_n or 1)
    index = args.shard_index if args.shard_index is not None else (
        slurm_i if args.num_shards is None or args.num_shards == slurm_n else None)
    if num < 1:
        raise ValueError(f"--num-shards must be >= 1, got {num}")
    if index is not None and not 0 <= index < num:
        raise ValueError(f"--shard-index {index} outside [0, {num}); use 0..{num - 1}")

    config = PrecomputeConfig.load(args.config)
    if args.device:
        config = dataclasses.replace(config, clip=dataclasses.replace(config.clip,
                                                                      device=args.device))
    dataset = load_dataset(args.dataset)
    config = config.with_sampling(dataset.config.sampling)
    pre = Precomputer(config, dataset, args.out, num_jobs=num)

    if args.finalize:
        manifest = pre.finalize()
        _summary(args.out, manifest)
        return 0
    jobs = [index] if index is not None else pre.pending()
    runner = run_ray if args.engine == "ray" else run_local
    results = runner(pre, jobs) if jobs else []
    for r in results:
        logger.info("job %d: %s (%d videos, %d failed, %d questions)", r.job_index, r.status,
                    r.videos, r.failed, r.questions)
    left = pre.pending()
    if left:
        print(f"{len(left)} of {num} shard jobs still to run (e.g. {left[:5]}); run them, then "
              f"`videocfr precompute ... --finalize` (or rerun without --shard-index)")
        return 0 if index is not None else 1
    manifest = pre.finalize()
    _summary(args.out, manifest)
    return 0


def _summary(out: str, manifest: dict) -> None:
    c = manifest["counts"]
    model = manifest["model"]
    print(f"cache {out}: {c['videos']} videos ({c['failed_videos']} failed), {c['questions']} "
          f"questions, {len(manifest['shards'])} shard files; model {model['name']} "
          f"({model['pretrained']})")
    for f in manifest.get("failures", [])[:20]:
        print(f"  failed: {f['video_id']} ({f['path']}): {f['error']}")


if __name__ == "__main__":
    sys.exit(main())
