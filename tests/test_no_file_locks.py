"""Readers need no file locks: with `flock` and fcntl locks failing with ENOLCK (a shared
filesystem without a lock daemon, made real by an LD_PRELOAD shim built with gcc), every reader
still works — Cache, PriorTable, verify, merge, re-fuse, export, search, the trainer's data path
and evaluation's reading path — because each opens shards read-only without HDF5 file locking.

The shim is checked first: under it, h5py's default open (with locking) fails with errno 37.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from synthetic_cache import make_cache

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/file.h>

int flock(int fd, int op) { (void)fd; (void)op; errno = ENOLCK; return -1; }

static int is_lock(int cmd) {
    return cmd == F_SETLK || cmd == F_SETLKW || cmd == F_GETLK
#ifdef F_OFD_SETLK
        || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW || cmd == F_OFD_GETLK
#endif
        ;
}

static int forward(const char *name, int fd, int cmd, void *arg) {
    int (*real)(int, int, ...) = (int (*)(int, int, ...))dlsym(RTLD_NEXT, name);
    return real(fd, cmd, arg);
}

int fcntl(int fd, int cmd, ...) {
    va_list ap; va_start(ap, cmd); void *arg = va_arg(ap, void *); va_end(ap);
    if (is_lock(cmd)) { errno = ENOLCK; return -1; }
    return forward("fcntl", fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
    va_list ap; va_start(ap, cmd); void *arg = va_arg(ap, void *); va_end(ap);
    if (is_lock(cmd)) { errno = ENOLCK; return -1; }
    return forward("fcntl64", fd, cmd, arg);
}
"""

READERS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from videocfr.cache_format import Cache, FusionConfig, PriorTable, verify_cache
    from videocfr.cache_format.export import export_file
    from videocfr.cache_format.merge import merge_caches
    from videocfr.cache_format.re_fuse import re_fuse_cache

    work = Path(sys.argv[1])
    a, b = work / "a", work / "b"
    done = {}
    c = Cache(a)
    key = sorted(c.keys())[0]
    c.video(key[0]); c.question(*key)
    done["Cache"] = len(c)
    done["PriorTable"] = len(PriorTable.load(a))
    done["verify"] = [str(p) for p in verify_cache(a)]
    done["merge"] = merge_caches([a, b], work / "merged")["counts"]["questions"]
    done["refuse"] = re_fuse_cache(a, work / "ref", FusionConfig(preset="videocfr-ref"))[
        "counts"]["questions"]
    done["export"] = export_file(a, work / "in.json", work / "out.json")["exported"]
    try:
        import faiss  # noqa: F401
    except ImportError:
        pass
    else:
        from videocfr.cache_format.search import FrameIndex
        q = c.video(key[0]).embeddings[0].astype(np.float32)
        done["search"] = FrameIndex.load(a).search(q, top=1)[0][0].video_id
    from videocfr.train.data import CacheSamples
    samples = CacheSamples(a, video_root=str(work))
    done["train.data"] = len(samples)
    from videocfr.evaluate.strategies import select
    v = c.video(key[0])
    done["evaluate"] = select("prior-topn", v, c.question(*key), 2,
                              np.random.default_rng(0)).tolist()
    print(json.dumps(done))
""")


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the ENOLCK shim")
    out = tmp_path_factory.mktemp("shim")
    (out / "enolck.c").write_text(SHIM)
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(out / "enolck.so"),
                    str(out / "enolck.c"), "-ldl"], check=True)
    return out / "enolck.so"


def _env(shim: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    env["LD_PRELOAD"] = str(shim)
    return env


def _run(shim: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=_env(shim),
                          capture_output=True, text=True, timeout=600)


def test_the_shim_makes_locked_opens_fail(shim, tmp_path):
    make_cache(tmp_path / "a", n_videos=2)
    shard = next((tmp_path / "a" / "shards").glob("*.h5"))
    locked = _run(shim, "import h5py, sys; h5py.File(sys.argv[1], 'r')", str(shard))
    assert locked.returncode != 0 and "errno = 37" in locked.stderr, locked.stderr[-2000:]
    unlocked = _run(shim, "import h5py, sys; h5py.File(sys.argv[1], 'r', locking=False)",
                    str(shard))
    assert unlocked.returncode == 0, unlocked.stderr[-2000:]


def test_every_reader_works_without_file_locks(shim, tmp_path):
    make_cache(tmp_path / "a", n_videos=4, n_questions=2, n_failed=1)
    make_cache(tmp_path / "b", n_videos=2, n_questions=1, n_failed=0, prefix="oth", seed=5)
    records = [{"problem_id": "q0", "problem": "?", "data_type": "video", "path": "./vid000.mp4",
                "problem_type": "multiple choice", "options": ["A. x", "B. y"],
                "solution": "<answer>A</answer>"}]
    (tmp_path / "in.json").write_text(json.dumps(records))
    want_search = importlib.util.find_spec("faiss") is not None
    if want_search:
        from videocfr.cache_format.search import build_index

        build_index(tmp_path / "a")  # written here: the index's writer is not under test
    env = _env(shim)
    env["VIDEOCFR_TRUST_DIR"] = "off"  # every shard checked in a child under the shim too
    done = subprocess.run([sys.executable, "-c", READERS, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["Cache"] == got["PriorTable"] == got["train.data"] == 8
    assert got["verify"] == []
    assert got["merge"] == 10 and got["refuse"] == 8 and got["export"] == 1
    assert len(got["evaluate"]) == 2
    if want_search:
        assert got["search"].startswith("vid")
