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

Two attempts of one job may overlap (a requeue while the first still runs): neither deletes what
the other committed, and the cache ends whole. SIGTERM / SIGINT stop a job within seconds,
remove its temporary files and decode workers, and leave it to be redone by a rerun.

The exit status tells a wrapper what to do: see EXIT_STATUS (printed by --help).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .worker import STOPPED_BY, Interrupted

logger = logging.getLogger(__name__)


EXIT_DONE, EXIT_UNFINISHED, EXIT_BAD_INPUT, EXIT_FATAL = 0, 1, 2, 3
EXIT_STATUS = """\
exit status:
  0    done: the jobs asked for are finished (and the manifest written when all are)
  1    unfinished jobs remain: resubmit / rerun (also --finalize naming missing or
       untrusted jobs)
  2    bad input or configuration: fix the command, config, dataset or annotation file
  3    fatal error: storage (disk full, file-size limit, I/O error, read-only or
       unwritable --out) or GPU; one line names the path or device and the cause
  130  stopped by SIGINT, 143 stopped by SIGTERM: unfinished, rerun to resume
"""


def _on_signal(signum, _frame) -> None:
    # one stop is enough: later signals must not interrupt the clean-up
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    STOPPED_BY.append(signum)  # raised again by the decode loop if this raise gets lost
    raise Interrupted(signum)


class _QuietLostStop:
    """`sys.unraisablehook` that keeps a lost stop off stderr and passes the rest on.

    A signal that lands while Python runs a weakref callback or a `__del__` has its Interrupted
    swallowed there ("Exception ignored in ..." and a traceback on stderr); the decode loop
    raises it again from STOPPED_BY, so the job still stops with its one line. Any other
    unraisable exception goes to the hook that was there before.
    """

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, unraisable) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):
            self.previous(unraisable)


def install_signal_handlers() -> None:
    """SIGTERM/SIGINT raise Interrupted; SIGXFSZ is ignored so a write past the file-size limit
    fails with EFBIG (an error naming the file) instead of killing the process."""
    STOPPED_BY.clear()
    if not isinstance(sys.unraisablehook, _QuietLostStop):
        sys.unraisablehook = _QuietLostStop(sys.unraisablehook)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _gpu_error(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}"
    return any(word in text for word in ("CUDA", "cuDNN", "cuBLAS", "NCCL", "OutOfMemory",
                                         "out of memory", "HIP error"))


def _quiet_open_clip(record: logging.LogRecord) -> bool:
    """Drop open_clip's INFO chatter (it logs through the root logger); keep its warnings."""
    return not (record.levelno < logging.WARNING and "open_clip" in record.pathname)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videocfr precompute", description=__doc__,
                                epilog=EXIT_STATUS,
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
                   help="only write manifest.json from finished jobs (exit 1 naming missing jobs "
                        "or jobs whose files fail their marker's sizes/sha256s)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run the jobs in this process (local) or on Ray")
    p.add_argument("--ray-retries", type=int, default=2,
                   help="--engine ray: resubmissions of a failed or timed-out job")
    p.add_argument("--ray-timeout", type=float, default=None,
                   help="--engine ray: cancel a job running longer than this (seconds)")
    p.add_argument("--device", default=None, help="override clip.device (cpu, cuda, cuda:1)")
    p.add_argument("--min-free-gb", type=float, default=None,
                   help="free space a job needs before the model loads (default: an estimate "
                        "from the job's videos and questions; 0 skips the check)")
    p.add_argument("--allow-empty", action="store_true",
                   help="accept an annotation file with no video question (else exit 2)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring: 0, 1, 2, 3, 130, 143)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_open_clip)
    from videocfr.cache_format import CacheError
    from videocfr.cache_format.io import StorageError
    from videocfr.cache_format.markers import JobsUnfinished

    from .clip import DeviceFailure
    from .datasets import DatasetError

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if main_thread:
        install_signal_handlers()

    def fail(code: int, err: BaseException) -> int:
        print(f"videocfr precompute: error: {err}", file=sys.stderr)
        return code

    try:
        return _run(args)
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        print(f"videocfr precompute: stopped by {name}; unfinished jobs keep no marker and "
              f"are redone by a rerun", file=sys.stderr)
        return 128 + stop.signum
    except JobsUnfinished as err:
        return fail(EXIT_UNFINISHED, err)
    except StorageError as err:
        return fail(EXIT_FATAL, err)
    except DeviceFailure as err:  # the GPU failed: the job left no marker; resubmit it
        return fail(EXIT_FATAL, err)
    except (CacheError, DatasetError, ValueError, FileNotFoundError) as err:
        return fail(EXIT_BAD_INPUT, err)
    except OSError as err:  # not one of our writes: still an I/O failure, not bad input
        return fail(EXIT_FATAL, err)
    except RuntimeError as err:
        return fail(EXIT_FATAL if _gpu_error(err) or "decode worker" in str(err)
                    else EXIT_BAD_INPUT, err)
    finally:
        if main_thread:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _run(args: argparse.Namespace) -> int:
    import dataclasses
    import functools

    from videocfr.cache_format.markers import shard_selection

    from .config import PrecomputeConfig
    from .datasets import load_dataset
    from .job import Precomputer, run_local, run_ray

    num, index = shard_selection(args.num_shards, args.shard_index)

    config = PrecomputeConfig.load(args.config)
    if args.device:
        config = dataclasses.replace(config, clip=dataclasses.replace(config.clip,
                                                                      device=args.device))
    if args.min_free_gb is not None and args.min_free_gb < 0:
        raise ValueError(f"--min-free-gb must be >= 0, got {args.min_free_gb}")
    dataset = load_dataset(args.dataset, allow_empty=args.allow_empty)
    config = config.with_sampling(dataset.config.sampling)
    min_free = None if args.min_free_gb is None else int(args.min_free_gb * 1e9)
    pre = Precomputer(config, dataset, args.out, num_jobs=num, min_free_bytes=min_free)

    if args.finalize:
        manifest = pre.finalize()
        _summary(args.out, manifest)
        return 0
    jobs = [index] if index is not None else pre.pending()
    runner = run_local
    if args.engine == "ray":
        from .ray_engine import RayOptions

        options = RayOptions(retries=args.ray_retries, timeout_s=args.ray_timeout)
        runner = functools.partial(run_ray, options=options)
    results = runner(pre, jobs) if jobs else []
    for r in results:
        logger.info("job %d: %s (%d videos, %d failed, %d questions)", r.job_index, r.status,
                    r.videos, r.failed, r.questions)
    left = pre.pending()
    if left:
        print(f"{len(left)} of {num} shard jobs still to run (e.g. {left[:5]}); run them, then "
              f"`videocfr precompute ... --finalize` (or rerun without --shard-index)")
        return EXIT_DONE if index is not None else EXIT_UNFINISHED
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
