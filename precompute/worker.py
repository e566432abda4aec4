"""Decoding in a separate worker process, with an enforced per-video timeout.

decord can hang inside FFmpeg while holding the GIL; no thread, signal or Python-level timeout
stops that, only killing the process does. So videos are decoded by one worker process
(`spawn` context by default: the parent has torch loaded, forking it is unsafe), and a
supervisor thread in the parent:

* sends the worker one video at a time and waits for its answer at most `timeout_s` seconds;
  past that it kills the worker, the video becomes `VideoDecodeError("... decode timed out after
  N s ...")`, and a fresh worker takes the next video;
* turns a worker crash (segfault, abort, OOM kill) into a failed record the same way;
* keeps up to `prefetch` decoded videos ready, so the caller's CLIP pass on video i (main
  process) overlaps the decoding of videos i+1, i+2 (worker processes).

With `num_workers` P > 1 (default: one per available core, see `default_workers`), each video
is decoded as min(P, MAX_PARTS) parts (decode.decode_part: a long video's time range split,
a short one left whole), one part per worker at once, and the parts are merged into the same
DecodedVideo a single pass gives. Parts of the next videos fill workers that finish early.

Results come back IN INPUT ORDER. Test hook: the environment variable
VIDEOCFR_DEBUG_DECODE_FAULT="hang:<substring>;crash:<substring>" makes the worker sleep forever
(hang) or kill itself with SIGSEGV (crash) on any path containing the substring; it exists
because decord cannot be made to hang on demand. With VIDEOCFR_DEBUG_DECODE_FAULT_FLAG=<file>
a hanging worker creates that file first (so a test knows the hang has begun) and stops hanging
once `<file>.release` exists (so a test can order two runs' events).

Workers die with their parent, even when it is killed outright: each worker asks the kernel for
SIGKILL at its parent's death (Linux `prctl(PR_SET_PDEATHSIG)`; the "parent" is the creating
THREAD, so workers are created by one pool-lifetime spawner thread) and also watches its parent
pid from a thread (other systems). Workers ignore SIGINT: a Ctrl-C reaches the whole process
group, and the parent decides (it stops them), so no worker prints a traceback.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from typing import Any

from .decode import (
    MIN_PART_FRAMES,
    DecodedPart,
    DecodedVideo,
    SamplingConfig,
    VideoDecodeError,
    decode_part,
    merge_parts,
)
from .scenes import SceneConfig

logger = logging.getLogger(__name__)

FAULT_ENV = "VIDEOCFR_DEBUG_DECODE_FAULT"
FAULT_FLAG_ENV = "VIDEOCFR_DEBUG_DECODE_FAULT_FLAG"
_PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT_S = 300.0  # spawn + imports; generous for loaded machines
_POLL_S = 0.5  # how often a blocked supervisor looks at its stop flag


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived (the handler of precompute.cli); raised in the main thread so
    every `with` block cleans up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# The signal precompute.cli's handler took. An exception raised by a signal handler is lost
# when the handler happens to run inside a weakref callback or a __del__ ("Exception ignored
# in ..."), and the handler ignores later signals; so the decode loop, where the main thread
# waits, raises it again from here.
STOPPED_BY: list[int] = []


def raise_if_stopped() -> None:
    """Raise Interrupted when a stop signal was taken (see STOPPED_BY)."""
    if STOPPED_BY:
        raise Interrupted(STOPPED_BY[0])


def _maybe_fault(path: str) -> None:
    """The test hook described in the module docstring."""
    spec = os.environ.get(FAULT_ENV, "")
    for rule in filter(None, spec.split(";")):
        kind, _, needle = rule.partition(":")
        if needle and needle in path:
            if kind == "hang":
                flag = os.environ.get(FAULT_FLAG_ENV)
                if flag:
                    open(flag, "a").close()
                while not (flag and os.path.exists(flag + ".release")):
                    time.sleep(0.05 if flag else 3600)
                return
            if kind == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def die_with_parent() -> None:
    """In a worker: die when the parent process dies; leave SIGINT to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError) as err:
            logger.debug("no prctl: %s", err)
    if parent == 1:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="videocfr-parent-watch").start()


def _worker_main(conn, sampling: SamplingConfig, scenes_cfg: SceneConfig,
                 num_threads: int, min_part_frames: int) -> None:
    """Worker process: decode the parts it is sent, answer (seq, part, DecodedPart | error)."""
    die_with_parent()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import cv2

    cv2.setNumThreads(1)  # the detector's resize/cvtColor run on small frames
    import decord  # noqa: F401  (import before "ready": the first video's clock excludes it)
    import scenedetect  # noqa: F401

    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent went away
            return
        if msg is None:
            return
        seq, part, num_parts, path = msg
        _maybe_fault(path)
        try:
            result: DecodedPart | VideoDecodeError = decode_part(
                path, sampling, scenes_cfg, part, num_parts, num_threads=num_threads,
                min_part_frames=min_part_frames)
        except VideoDecodeError as err:
            result = err
        except Exception as err:  # any other failure is this video's failure, not the shard's
            result = VideoDecodeError(f"{path}: unexpected {type(err).__name__} while decoding: "
                                      f"{err}")
        conn.send((seq, part, result))


class _Worker:
    """One decode process and the parent's end of its pipe."""

    def __init__(self, ctx, args: tuple):
        parent, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, name="videocfr-decode", daemon=True,
                                args=(child, *args))
        self.task: tuple | None = None  # (seq, part, path, deadline) while busy
        self.proc.start()
        child.close()
        self.conn = parent
        self.ready = False

    def wait_ready(self, stop: threading.Event) -> None:
        """Block until the worker has imported its libraries (start several, then wait)."""
        if self.ready:
            return
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise RuntimeError(f"the decode worker did not start within "
                                   f"{STARTUP_TIMEOUT_S:g} s; is the machine overloaded?")
            if wait([self.conn, self.proc.sentinel], timeout=min(left, _POLL_S)):
                try:
                    msg = self.conn.recv()
                except EOFError:
                    self.kill()
                    raise RuntimeError(
                        f"the decode worker died while starting (exit code "
                        f"{self.proc.exitcode}); check that `python -c 'import decord, "
                        f"scenedetect, cv2'` works in this environment") from None
                assert msg[0] == "ready", msg
                logger.debug("decode worker %d ready", msg[1])
                self.ready = True
                return

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not."""
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=5)
        self.kill()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Video:
    """One input item on its way through the pool."""

    def __init__(self, item: tuple[Any, Any], num_parts: int):
        _key, path = item  # ValueError/TypeError for anything but a (key, path) pair
        self.item = item
        self.path = os.fspath(path)
        self.parts: list[DecodedPart | None] = [None] * num_parts
        self.error: VideoDecodeError | None = None

    @property
    def resolved(self) -> bool:
        return self.error is not None or all(p is not None for p in self.parts)

    def result(self) -> DecodedVideo | VideoDecodeError:
        if self.error is not None:
            return self.error
        try:
            return merge_parts(self.parts)
        except ValueError as err:  # parts that do not fit together: report, do not crash
            return VideoDecodeError(f"{self.path}: decoded parts do not fit together ({err})")


class _Supervisor(threading.Thread):
    """Feeds the workers, enforces the timeout, restarts them, and queues results in order."""

    def __init__(self, pool: DecodePool, items: Iterable[tuple[Any, Any]]):
        super().__init__(name="videocfr-decode-supervisor", daemon=True)
        self.pool = pool
        self.items = items
        self.timeout_s = pool.timeout_s
        self.prefetch = pool.prefetch
        self.workers = pool.workers  # shared: a killed worker is replaced in the pool too
        self.num_parts = min(len(pool.workers), MAX_PARTS)
        self.out: queue.Queue = queue.Queue(maxsize=pool.prefetch)
        self.stop = threading.Event()

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _fail(self, w: int, video: _Video | None, message: str, log: str) -> None:
        """Kill worker w (hung or crashed); its video fails with `message`."""
        logger.warning(log)
        self.workers[w].kill()
        self.workers[w] = None
        if video is not None and video.error is None:
            video.error = VideoDecodeError(message)

    def _collect(self, videos: dict[int, _Video]) -> None:
        """Wait for answers, timeouts and crashes of the busy workers (at most _POLL_S)."""
        busy = [(w, wk) for w, wk in enumerate(self.workers) if wk is not None and wk.task]
        if not busy:
            return
        now = time.monotonic()
        wait_s = max(0.0, min(_POLL_S, *(wk.task[3] - now for _, wk in busy)))
        ready = set(wait([c for _, wk in busy for c in (wk.conn, wk.proc.sentinel)], wait_s))
        now = time.monotonic()
        for w, wk in busy:
            seq, part, path, deadline = wk.task
            video = videos.get(seq)
            if wk.conn in ready:
                try:
                    got_seq, got_part, result = wk.conn.recv()
                except EOFError:
                    pass  # died mid-answer: handled as a crash below
                else:
                    assert (got_seq, got_part) == (seq, part), (got_seq, got_part, seq, part)
                    wk.task = None
                    if video is not None and isinstance(result, VideoDecodeError):
                        video.error = video.error or result
                    elif video is not None:
                        video.parts[part] = result
                    continue
            if wk.conn in ready or wk.proc.sentinel in ready:
                wk.proc.join(timeout=10)
                reason = _exit_reason(wk.proc.exitcode)
                self._fail(w, video, f"{path}: the decode worker crashed ({reason}) while "
                           f"decoding this file; it is probably corrupt: check it with ffprobe "
                           f"or re-encode it", f"decode worker crashed on {path} ({reason}); "
                           f"restarting it")
            elif now >= deadline:
                self._fail(w, video, f"{path}: decode timed out after {self.timeout_s:g} s (the "
                           f"decode worker was killed). Check the file with ffprobe, re-encode "
                           f"it, or raise the timeout", f"decode of {path} timed out after "
                           f"{self.timeout_s:g} s; restarting the worker")

    def run(self) -> None:
        items = enumerate(self.items)
        videos: dict[int, _Video] = {}
        tasks: list[tuple[int, int]] = []  # (seq, part) not yet sent, in order
        emitted = admitted = 0
        exhausted = False
        try:
            while not self.stop.is_set():
                # admit videos while the window (prefetch + one per worker) has room
                while not exhausted and admitted < emitted + self.prefetch + len(self.workers):
                    nxt = next(items, None)
                    if nxt is None:
                        exhausted = True
                        break
                    seq, item = nxt
                    videos[seq] = _Video(item, self.num_parts)
                    tasks += [(seq, part) for part in range(self.num_parts)]
                    admitted += 1
                # hand tasks to idle workers (a video already failed needs no more parts)
                tasks = [t for t in tasks if t[0] in videos and videos[t[0]].error is None]
                self.pool.start(wait=False, limit=len(tasks))  # missing ones start together
                for w in range(len(self.workers)):
                    if not tasks:
                        break
                    wk = self.workers[w]
                    if wk is None:
                        continue
                    wk.wait_ready(self.stop)
                    if wk.task is None:
                        seq, part = tasks.pop(0)
                        path = videos[seq].path
                        wk.conn.send((seq, part, self.num_parts, path))
                        wk.task = (seq, part, path, time.monotonic() + self.timeout_s)
                self._collect(videos)
                # hand finished videos to the consumer, in input order
                while emitted in videos and videos[emitted].resolved:
                    video = videos.pop(emitted)
                    if not self._put(("item", (video.item, video.result()))):
                        return
                    emitted += 1
                if exhausted and emitted == admitted:
                    self._put(("done", None))
                    return
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put(("error", err))
        finally:
            for w, wk in enumerate(self.workers):
                if wk is not None and wk.task is not None:
                    # The consumer left mid-way: a worker still decoding for it is killed (its
                    # answer would come to nobody); idle workers stay for the pool's next call.
                    wk.kill()
                    self.workers[w] = None


# Parts a video is split into at most. Every part probes the file (open, index, first frame)
# before it knows whether the video is long enough to have it, so with dozens of workers a short
# video would be probed dozens of times; many videos in flight keep the cores busy instead.
MAX_PARTS = 4


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity: taskset, SLURM, cgroups cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers(env: dict | None = None) -> int:
    """Decode processes: one per available core, shared out among the node's processes.

    With LOCAL_WORLD_SIZE = P processes on the node (torchrun sets it; set it yourself when
    launching one process per GPU by hand), each gets cores // P. A node where each process
    is pinned to its own cores (taskset, SLURM --cpus-per-task) needs no LOCAL_WORLD_SIZE.
    """
    env = os.environ if env is None else env
    try:
        share = max(1, int(env.get("LOCAL_WORLD_SIZE") or 1))
    except ValueError:
        share = 1
    return max(1, available_cores() // share)


class DecodePool:
    """Decode worker processes kept for several `decode` calls (start them once per job).

    Args:
        sampling, scenes_cfg, timeout_s, prefetch, num_threads, mp_context, num_workers,
            min_part_frames: as `iter_decoded`.

    Use as a context manager; `start()` spawns the workers ahead of time (e.g. while the CLIP
    model loads), `decode(items)` yields results in input order. One `decode` at a time.
    """

    def __init__(self, sampling: SamplingConfig | None = None,
                 scenes_cfg: SceneConfig | None = None, *, timeout_s: float = 300.0,
                 prefetch: int = 2, num_threads: int | None = None, mp_context: str = "spawn",
                 num_workers: int | None = None, min_part_frames: int = MIN_PART_FRAMES):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
        if mp_context not in ("spawn", "forkserver"):
            raise ValueError(f"mp_context must be 'spawn' or 'forkserver' (fork is unsafe with "
                             f"torch loaded), got {mp_context!r}")
        workers = default_workers() if num_workers is None else num_workers
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"num_workers must be an int >= 1, got {workers!r}")
        threads = max(1, available_cores() // workers) if num_threads is None else num_threads
        self.timeout_s, self.prefetch = timeout_s, prefetch
        self.ctx = mp.get_context(mp_context)
        self.args = (sampling or SamplingConfig(), scenes_cfg or SceneConfig(), threads,
                     min_part_frames)
        self.workers: list[_Worker | None] = [None] * workers
        self._stop = threading.Event()
        self._decoding = False
        self._spawner: ThreadPoolExecutor | None = None

    def _spawn(self) -> _Worker:
        """A new worker, created by the pool's spawner thread (see die_with_parent)."""
        if self._spawner is None:
            self._spawner = ThreadPoolExecutor(1, thread_name_prefix="videocfr-decode-spawn")
        return self._spawner.submit(_Worker, self.ctx, self.args).result()

    def start(self, wait: bool = True, limit: int | None = None) -> None:
        """Spawn the missing workers (at most `limit`), together; wait until they are ready."""
        missing = [w for w, wk in enumerate(self.workers) if wk is None]
        for w in missing[:limit]:
            self.workers[w] = self._spawn()
        if wait:
            for wk in self.workers:
                if wk is not None:
                    wk.wait_ready(self._stop)

    def decode(self, items: Iterable[tuple[Any, str | os.PathLike]]
               ) -> Iterator[tuple[tuple[Any, Any], DecodedVideo | VideoDecodeError]]:
        """Decode (key, path) items ahead of the caller; yields (item, result) in input order."""
        if self._decoding:
            raise RuntimeError("DecodePool.decode is already running; one call at a time")
        self._decoding = True
        sup = _Supervisor(self, items)
        sup.start()
        try:
            while True:
                raise_if_stopped()
                try:  # bounded: a signal that another thread caught runs its handler here
                    kind, payload = sup.out.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if kind == "item":
                    yield payload
                elif kind == "error":
                    raise payload
                else:
                    return
        finally:
            sup.stop.set()
            sup.join()
            self._decoding = False

    def close(self) -> None:
        """Ask every worker to exit (killing any that does not)."""
        self._stop.set()
        for w, wk in enumerate(self.workers):
            if wk is not None:
                wk.close()
                self.workers[w] = None
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)
            self._spawner = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_decoded(items: Iterable[tuple[Any, str | os.PathLike]],
                 sampling: SamplingConfig | None = None, scenes_cfg: SceneConfig | None = None,
                 *, timeout_s: float = 300.0, prefetch: int = 2, num_threads: int | None = None,
                 mp_context: str = "spawn", num_workers: int | None = None,
                 min_part_frames: int = MIN_PART_FRAMES,
                 ) -> Iterator[tuple[tuple[Any, Any], DecodedVideo | VideoDecodeError]]:
    """Decode videos in worker processes, ahead of the caller, in input order.

    Args:
        items: (key, path) pairs; consumed lazily by a background thread.
        sampling: frame sampling (default SamplingConfig()).
        scenes_cfg: scene detection (default SceneConfig()).
        timeout_s: per-part limit (a whole video when it is not split); past it the worker is
            killed and the video fails with "decode timed out after N s".
        prefetch: decoded videos kept ready for the caller (at most prefetch + 1 in memory
            besides the one the caller holds).
        num_threads: decoder threads per worker (default: the cores left per worker).
        mp_context: "spawn" (default) or "forkserver"; never "fork" once torch is loaded.
        num_workers: decode processes, and the parts a long video is split into (at most
            MAX_PARTS; default `default_workers()`).
        min_part_frames: a video is split only into parts of at least this many frames.

    Yields:
        (item, DecodedVideo) or (item, VideoDecodeError) per input item, in input order.
        A bad video, a timeout or a worker crash is yielded as a VideoDecodeError, never raised.

    Raises:
        ValueError: bad arguments. RuntimeError: the worker cannot start at all.
    """
    pool = DecodePool(sampling, scenes_cfg, timeout_s=timeout_s, prefetch=prefetch,
                      num_threads=num_threads, mp_context=mp_context, num_workers=num_workers,
                      min_part_frames=min_part_frames)
    try:
        yield from pool.decode(items)
    finally:
        pool.close()
