"""Shard checks run in a child process: a shard whose check hangs, crashes or runs out of memory
is one refusal naming the shard and the kind (exit 1 from verify, an exception from readers) and
the calling process goes on; a pass is paid once per sha256; the bytes opened are the bytes
checked.

The hang / crash / memory cases replace the child's command line (sandbox.child_command) by one
that sleeps, dies by a signal or exhausts a real RLIMIT_AS: what is tested is the parent's
handling of each ending, the one part of the mechanism a well-formed shard cannot reach.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_cache import make_cache
from videocfr.cache_format import Cache, CacheError, PriorTable, sandbox, verify_cache
from videocfr.cache_format.cli import cache_main
from videocfr.cache_format.structure import StructureError

ENDINGS = {
    "hang": "import time; time.sleep(60)",
    "crash": "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
    "memory": ("import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 28, 1 << 28)); "
               "x = bytearray(1 << 30)"),
    "killed": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
}
SHARDS = 3  # 4 ok videos and 1 failed, 2 per shard
KIND = {"hang": "hang", "crash": "crash", "memory": "memory", "killed": "memory"}


@pytest.fixture(autouse=True)
def fresh_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOCFR_TRUST_DIR", str(tmp_path / "trust"))
    sandbox.forget()
    yield
    sandbox.forget()


@pytest.fixture
def cache(tmp_path) -> Path:
    make_cache(tmp_path / "c", n_videos=4, n_questions=2, max_videos=2)
    assert len(json.loads((tmp_path / "c" / "manifest.json").read_text())["shards"]) == SHARDS
    return tmp_path / "c"


def _children(monkeypatch) -> list[dict]:
    """Record every child started (its request) while still running the real one."""
    started: list[dict] = []
    real = sandbox.child_command

    def spy(request):
        started.append(request)
        return real(request)

    monkeypatch.setattr(sandbox, "child_command", spy)
    return started


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_check_that_hangs_crashes_or_exhausts_memory_is_one_named_refusal(
        cache, monkeypatch, capsys, ending):
    monkeypatch.setenv("VIDEOCFR_CHECK_TIMEOUT", "3")
    monkeypatch.setattr(sandbox, "child_command",
                        lambda request: [sys.executable, "-c", ENDINGS[ending]])
    with pytest.raises(StructureError) as err:
        PriorTable.load(cache)
    assert err.value.kind == KIND[ending] and err.value.where.endswith(".h5")
    assert cache_main(["verify", str(cache)]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if f"[{KIND[ending]}]" in ln]
    assert len(lines) == SHARDS and all(".h5" in ln for ln in lines), lines  # one line per shard
    monkeypatch.undo()  # the process goes on: the real check now passes
    sandbox.forget()
    assert len(PriorTable.load(cache)) == 8


def test_shards_are_checked_in_parallel_once_per_sha256(cache, monkeypatch, tmp_path):
    started = _children(monkeypatch)
    table = PriorTable.load(cache)
    assert len(started) == SHARDS and {r["level"] for r in started} == {"read"}
    PriorTable.load(cache)
    Cache(cache).keys()
    assert len(started) == SHARDS  # remembered in process
    sandbox.forget()
    PriorTable.load(cache)
    assert len(started) == SHARDS  # remembered in the trust record
    assert len(list((tmp_path / "trust").glob("pass-*.json"))) == SHARDS
    shutil.rmtree(tmp_path / "trust")  # a team clears the record
    sandbox.forget()
    again = PriorTable.load(cache)
    assert len(started) == 2 * SHARDS
    k = table.keys()[0]
    np.testing.assert_array_equal(table.get(*k), again.get(*k))


def test_trust_record_off_and_verify_fresh(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOCFR_TRUST_DIR", "off")
    started = _children(monkeypatch)
    assert verify_cache(cache) == [] and verify_cache(cache) == []
    assert [r["level"] for r in started] == ["values"] * SHARDS
    assert verify_cache(cache, fresh=True) == []
    assert len(started) == 2 * SHARDS
    PriorTable.load(cache)  # a values pass answers a reader's check
    assert len(started) == 2 * SHARDS and not (tmp_path / "trust").exists()


def test_a_copy_swapped_in_after_the_check_is_not_read(cache, tmp_path):
    """The file read is the inode pinned and hashed, whatever its name points at later."""
    c = Cache(cache)
    shard = c.shard_paths[0]
    (p, _), = sandbox.check_paths([shard], [str(shard)], "read", c.config_hash, c.embed_dim)
    original = sandbox._hash_fd(p.fd)
    other = tmp_path / "other.h5"
    other.write_bytes(b"\0" * 4096)
    os.replace(other, shard)  # the name now points at other bytes
    f = p.open_h5()
    p.close()
    assert p.sha256 == original and f["qframes/prior"].shape[0] > 0
    f.close()


def test_a_shard_changed_in_place_while_checked_is_refused(cache):
    c = Cache(cache)
    shard = c.shard_paths[0]
    p = sandbox.pin(shard, str(shard))
    with open(shard, "r+b") as f:  # same inode, new bytes
        f.seek(100)
        f.write(b"\xff")
    with pytest.raises(CacheError, match="changed while"):
        p.open_h5()
    p.close()


def test_trust_record_entries_are_plain_json(cache, tmp_path):
    PriorTable.load(cache)
    entries = [json.loads(p.read_text()) for p in (tmp_path / "trust").glob("pass-*.json")]
    assert entries and all(e["answer"]["status"] == "ok" and len(e["key"][0]) == 64
                           for e in entries)


def test_limits_from_env(monkeypatch):
    monkeypatch.setenv("VIDEOCFR_CHECK_MEMORY", "512M")
    monkeypatch.setenv("VIDEOCFR_CHECK_TIMEOUT", "7.5")
    assert sandbox.Limits.from_env().memory_bytes == 512 << 20
    assert sandbox.Limits.from_env().timeout_s == 7.5
    monkeypatch.setenv("VIDEOCFR_CHECK_MEMORY", "lots")
    with pytest.raises(CacheError, match="VIDEOCFR_CHECK"):
        sandbox.Limits.from_env()
