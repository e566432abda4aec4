"""`videocfr precompute --engine ray`: shard jobs as Ray tasks, with retries and timeouts.

Every shard job is independent and idempotent (precompute/job.py), so a Ray task is simply "run
job i": it rebuilds the config and dataset from plain data, skips a job whose marker exists, and
writes its shards through the ShardWriter like the local engine — the shards are byte-identical.

The driver keeps at most one task per free slot of the cluster in flight, so a task's time since
submission is its run time. A task that raises, or whose worker dies, is resubmitted up to
`retries` times; a task running longer than `timeout_s` is cancelled (`ray.cancel(force=True)`
kills its worker; the job left no marker, so its partial shard files are deleted when it reruns)
and counts as a failed attempt. A job out of attempts is reported as failed; the run then ends
with the jobs still to run named (exit 1) and a rerun redoes only them.

Cluster: `ray.init()` connects to RAY_ADDRESS when set (e.g. `ray://head:10001` or `auto`),
otherwise starts a local Ray. Workers must be able to import this package (install it on every
node, as for SLURM arrays) and read the dataset and cache paths (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """How shard jobs run on Ray.

    Args:
        retries: resubmissions of a job whose task failed, crashed or timed out.
        timeout_s: a task running longer than this is cancelled (None: no limit).
        num_cpus: CPUs reserved per task (decode workers + CLIP).
        num_gpus: GPUs per task (None: 1 when clip.device is cuda, else 0).
        poll_s: how often the driver checks for finished and hung tasks.
    """

    retries: int = 2
    timeout_s: float | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None
    poll_s: float = 1.0

    def __post_init__(self):
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"ray retries must be an int >= 0, got {self.retries!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"ray job timeout must be > 0 seconds, got {self.timeout_s!r}")
        if not self.num_cpus > 0 or not self.poll_s > 0:
            raise ValueError("ray num_cpus and poll_s must be > 0")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("--engine ray needs Ray: pip install ray (the 'ray' extra), or use "
                           "--engine local, or SLURM arrays with --shard-index") from None
    return ray


def ensure_ray():
    """The ray module, initialised: RAY_ADDRESS if set, else a local instance."""
    ray = _import_ray()
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        logger.info("ray.init(address=%r)", address or "local")
        ray.init(address=address, log_to_driver=True)
    return ray


def ray_map(fn: Callable, calls: dict[int, tuple], options: RayOptions,
            resources: dict | None = None) -> tuple[dict[int, object], dict[int, str]]:
    """Run `fn(*calls[i])` for every i as Ray tasks, with retries and a per-task timeout.

    Args:
        fn: a module-level function (pickled to the workers).
        calls: key -> positional arguments.
        options: retries, timeout, polling.
        resources: `ray.remote` resources per task ({"num_cpus": 1, "num_gpus": 0}).

    Returns:
        (key -> result of the successful attempt, key -> error of a key out of attempts).
    """
    ray = ensure_ray()
    resources = resources or {"num_cpus": options.num_cpus, "num_gpus": 0}
    task = ray.remote(max_retries=0, **resources)(fn)
    per_task = max(resources.get("num_cpus") or 0, 1e-9)
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // per_task))
    if resources.get("num_gpus"):
        gpus = ray.cluster_resources().get("GPU", 0)
        slots = max(1, min(slots, int(gpus // resources["num_gpus"]) or 1))
    waiting = list(calls)
    attempts = {key: 0 for key in calls}
    running: dict = {}  # ref -> (key, start time)
    results: dict[int, object] = {}
    errors: dict[int, str] = {}

    def failed(key: int, why: str) -> None:
        if attempts[key] <= options.retries:
            logger.warning("job %s attempt %d failed (%s); retrying", key, attempts[key], why)
            waiting.append(key)
        else:
            logger.error("job %s failed after %d attempts: %s", key, attempts[key], why)
            errors[key] = why

    try:
        _drive(ray, task, calls, options, slots, waiting, attempts, running, results, failed)
    finally:
        for ref in running:  # interrupted (Ctrl-C, an error here): leave no task behind
            ray.cancel(ref, force=True)
    return results, errors


def _drive(ray, task, calls, options, slots, waiting, attempts, running, results, failed):
    """The scheduling loop of `ray_map` (state passed in, so its caller can clean up)."""
    while waiting or running:
        while waiting and len(running) < slots:
            key = waiting.pop(0)
            attempts[key] += 1
            running[task.remote(*calls[key])] = (key, time.monotonic())
        done, _ = ray.wait(list(running), num_returns=1, timeout=options.poll_s)
        for ref in done:
            key, _start = running.pop(ref)
            try:
                results[key] = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - a task's failure, reported and retried
                failed(key, f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}")
        if options.timeout_s is not None:
            now = time.monotonic()
            for ref, (key, start) in list(running.items()):
                if now - start > options.timeout_s:
                    logger.warning("job %s ran over %.0f s; cancelling it", key,
                                   options.timeout_s)
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    failed(key, f"timed out after {options.timeout_s:.0f} s")


def _ray_job(config_dict: dict, dataset_config: dict, cache_dir: str, num_jobs: int,
             job_index: int) -> dict:
    """One shard job inside a Ray worker (config and dataset rebuilt from plain data)."""
    from .config import PrecomputeConfig
    from .datasets import DatasetConfig, load_dataset
    from .job import Precomputer

    config = PrecomputeConfig.from_dict(config_dict)
    dataset = load_dataset(DatasetConfig(**dataset_config), allow_empty=True)  # driver checked
    return dataclasses.asdict(Precomputer(config, dataset, cache_dir, num_jobs).run_job(job_index))


def run_ray(pre, job_indices: list[int], options: RayOptions | None = None) -> list:
    """Map shard jobs of a Precomputer onto Ray; failed jobs come back with status "failed"."""
    from .job import JobResult

    options = options or RayOptions()
    gpus = options.num_gpus
    if gpus is None:
        gpus = 1 if pre.config.clip.device.startswith("cuda") else 0
    config_dict = {k: v for k, v in pre.record.items() if k != "dataset"}
    dataset_config = dataclasses.asdict(pre.dataset.config)
    calls = {i: (config_dict, dataset_config, str(pre.cache_dir), pre.num_jobs, i)
             for i in job_indices}
    results, errors = ray_map(_ray_job, calls, options,
                              {"num_cpus": options.num_cpus, "num_gpus": gpus})
    out = [JobResult(**results[i]) if i in results else JobResult(i, "failed")
           for i in job_indices]
    for i, why in sorted(errors.items()):
        logger.error("shard job %d failed on Ray: %s", i, why)
    return out
