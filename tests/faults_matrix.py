"""Fault runs on the demo dataset, as a user meets them; prints one row per run and a summary.

    PYTHONPATH=. python tests/faults_matrix.py [--repeat N] [--work DIR]

Each run is the real `videocfr precompute` CLI (demo dataset, demo config with one video per
shard part, 2 shard jobs) in its own session. After each run: its exit status, whether it
crashed (signal / 139), the processes of its session still alive (orphans), and, when a manifest
exists, `verify_cache` on it (a broken manifest). A full disk and a read-only filesystem are real
tmpfs mounts where the user may mount (root); otherwise those rows are skipped. Not a test: it
takes minutes (tests/test_faults_*.py are the fast checks).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faults_data as fd  # noqa: E402
from videocfr.cache_format import verify_cache  # noqa: E402

CONFIG = (fd.REPO / "configs/precompute/demo.yaml").read_text() + "shards: {max_videos: 1}\n"
JOB0_LAST = "needle_green.mp4"  # job 0 of 2 takes bigbuckbunny, carphone, needle_green


class Run:
    def __init__(self, work: Path, name: str, out: Path | None = None, extra=(), env=None,
                 preexec=None):
        self.name, self.out = name, out or work / name
        self.flag = work / f"{name}.flag"
        self.proc = subprocess.Popen(
            fd.cli("demo", work / "demo1.yaml", self.out, "--num-shards", "2", *extra),
            cwd=fd.REPO, env=fd.env(VIDEOCFR_DEBUG_DECODE_FAULT_FLAG=str(self.flag),
                                    **(env or {})),
            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=preexec)

    def wait_flag(self) -> None:
        deadline = time.monotonic() + 300
        while not self.flag.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: ended before its hang: "
                                   f"{self.proc.stderr.read()[-2000:]}")
            time.sleep(0.05)

    def finish(self, timeout: float = 600) -> dict:
        _o, err = self.proc.communicate(timeout=timeout)
        deadline = time.monotonic() + 30
        while (left := fd.session_processes(self.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in (int(x.split()[0]) for x in left):
            os.kill(pid, signal.SIGKILL)
        rc = self.proc.returncode
        errors = [x for x in err.splitlines() if "error:" in x or "stopped by" in x]
        return {"rc": rc, "orphans": len(left), "segfault": rc in (-11, 139),
                "traceback": "Traceback" in err, "message": errors[-1] if errors else ""}


def check_cache(out: Path) -> str:
    if not (out / "manifest.json").exists():
        return "no manifest"
    problems = verify_cache(out)
    return "manifest verifies" if not problems else f"BROKEN manifest: {problems[0]}"


def leftovers(out: Path) -> str:
    """Temporary files left in shards/ (claims of a SIGKILLed run are expected there)."""
    left = fd.leftovers(out)
    return f"; left in shards/: {', '.join(left)}" if left else ""


def mount_tmpfs(path: Path, opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def scenarios(work: Path):
    hang0 = {"VIDEOCFR_DEBUG_DECODE_FAULT": f"hang:{JOB0_LAST}"}

    def claims(out: Path) -> list[dict]:
        found = []
        for p in (out / "shards").glob(".attempt-*.json"):
            try:
                found.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                pass
        return found

    def wait(cond, run: Run) -> None:
        deadline = time.monotonic() + 300
        while not cond():
            if run.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{run.name}: {run.proc.stderr.read()[-2000:]}")
            time.sleep(0.05)

    def requeue(kill_b_after: str):
        out = work / f"requeue-{kill_b_after}"
        a = Run(work, f"requeue-{kill_b_after}-a", out, ("--shard-index", "0"), hang0)
        a.wait_flag()
        wait(lambda: len(claims(out)) == 1 and len(claims(out)[0]["files"]) == 2, a)
        a_token = claims(out)[0]["token"]
        b = Run(work, f"requeue-{kill_b_after}-b", out, ("--shard-index", "0"), hang0)
        if kill_b_after == "parts":
            wait(lambda: any(c["token"] != a_token and len(c["files"]) == 2
                             for c in claims(out)), b)
        else:
            time.sleep(3)  # B is loading its model
        os.killpg(b.proc.pid, signal.SIGKILL)
        rb = b.finish()
        (work / f"requeue-{kill_b_after}-a.flag.release").touch()
        ra = a.finish()
        rerun = Run(work, f"requeue-{kill_b_after}-rerun", out).finish()
        return {**ra, "orphans": ra["orphans"] + rb["orphans"] + rerun["orphans"],
                "segfault": ra["segfault"] or rb["segfault"] or rerun["segfault"],
                "message": f"A exit {ra['rc']}, rerun exit {rerun['rc']}"}, check_cache(out)

    yield "requeue: B started, killed at model load; A finishes", lambda: requeue("load")
    yield "requeue: B started, killed after writing parts; A finishes", lambda: requeue("parts")

    def fsize():
        limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))  # noqa
        r = Run(work, "fsize", extra=("--min-free-gb", "0"), preexec=limit).finish()
        return r, check_cache(work / "fsize")

    yield "file-size limit 64 KiB (ulimit -f)", fsize

    def full_disk(precheck: bool):
        mnt = work / f"full-{precheck}"
        if not mount_tmpfs(mnt, "size=96k"):
            return None, None
        try:
            extra = () if precheck else ("--min-free-gb", "0")
            r = Run(work, f"full-{precheck}", mnt / "cache", extra).finish()
            return r, check_cache(mnt / "cache") + leftovers(mnt / "cache")
        finally:
            subprocess.run(["umount", str(mnt)], check=False)

    yield "full disk (96 KiB tmpfs), free-space check skipped", lambda: full_disk(False)
    yield "full disk (96 KiB tmpfs), free-space check on", lambda: full_disk(True)

    def read_only():
        mnt = work / "ro"
        if not mount_tmpfs(mnt, "ro,size=1m"):
            return None, None
        try:
            return Run(work, "ro", mnt / "cache").finish(), check_cache(mnt / "cache")
        finally:
            subprocess.run(["umount", str(mnt)], check=False)

    yield "--out on a read-only filesystem", read_only

    def under_file():
        (work / "a-file").write_text("x")
        return Run(work, "under-file", work / "a-file" / "cache").finish(), "no manifest"

    yield "--out under a file", under_file

    def signal_run(name: str, sig: int, group: bool):
        r = Run(work, name, extra=("--shard-index", "0"), env=hang0)
        r.wait_flag()
        (os.killpg if group else os.kill)(r.proc.pid, sig)
        res = r.finish()
        return res, check_cache(r.out) + leftovers(r.out)

    yield "SIGTERM to the parent alone, decode hung", lambda: signal_run("term", 15, False)
    yield "SIGINT to the process group (Ctrl-C), decode hung", lambda: signal_run("int", 2, True)
    yield "SIGKILL to the parent alone, decode hung", lambda: signal_run("kill", 9, False)

    def empty():
        ds = work / "empty.yaml"
        (work / "empty.jsonl").write_text("")
        ds.write_text(f"annotation: {work / 'empty.jsonl'}\nvideo_root: {work}\n")
        proc = subprocess.run(fd.cli(ds, work / "demo1.yaml", work / "empty-cache"),
                              cwd=fd.REPO, env=fd.env(), capture_output=True, text=True)
        msg = [x for x in proc.stderr.splitlines() if "error:" in x]
        return {"rc": proc.returncode, "orphans": 0, "segfault": False,
                "traceback": "Traceback" in proc.stderr, "message": msg[-1] if msg else ""}, \
            check_cache(work / "empty-cache")

    yield "empty annotation file", empty


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="videocfr-faults-"))
    totals = {"runs": 0, "broken": 0, "orphans": 0, "segfaults": 0, "tracebacks": 0}
    for rep in range(args.repeat):
        rep_dir = work / f"rep{rep}"
        rep_dir.mkdir(parents=True, exist_ok=True)
        (rep_dir / "demo1.yaml").write_text(CONFIG)
        for name, fn in scenarios(rep_dir):
            res, cache = fn()
            if res is None:
                print(f"| {name} | skipped (cannot mount tmpfs here) |")
                continue
            totals["runs"] += 1
            totals["broken"] += cache.startswith("BROKEN")
            totals["orphans"] += res["orphans"]
            totals["segfaults"] += res["segfault"]
            totals["tracebacks"] += res["traceback"]
            print(f"| {name} | exit {res['rc']} | {res['message'][:150]} | {cache} | "
                  f"orphans {res['orphans']} |", flush=True)
    print("faults " + " ".join(f"{k}={v}" for k, v in totals.items()))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
