"""Faults: two attempts of one shard job overlapping (a requeue while the first still runs).

Every interleaving must end with a manifest whose every file exists and verifies, or with no
manifest and a job that a plain rerun completes. "Killed" attempts are real child processes
stopped with SIGKILL after they have written some parts; the other attempt runs here, one part
per step, so the order of events is exact.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_cache import TEST_MODEL, make_video
from videocfr.cache_format import ShardWriter, finalize_cache, job_done, verify_cache
from videocfr.cache_format.markers import JobsUnfinished

REPO = Path(__file__).resolve().parents[1]
CFG = {"faults": "attempts"}
N_VIDEOS = 3

CHILD = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from synthetic_cache import TEST_MODEL, make_video
from videocfr.cache_format import ShardWriter
cache, seed, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with ShardWriter(cache, {cfg!r}, embed_dim=8, model=TEST_MODEL, max_videos=1) as w:
    for i in range({n}):
        if i == parts:
            print("ready", flush=True)
            time.sleep(3600)
        w.add(make_video(f"v{{i}}", k=4, dim=8, seed=seed + i), [])
""".format(repo=str(REPO), tests=str(REPO / "tests"), cfg=CFG, n=N_VIDEOS)


def stepped(cache: Path, seed: int):
    """An attempt run here, one step at a time: enter, one part per video, commit."""
    w = ShardWriter(cache, CFG, embed_dim=8, model=TEST_MODEL, max_videos=1)
    w.__enter__()
    yield "started"
    for i in range(N_VIDEOS - 1):  # the last video's part is written at commit
        w.add(make_video(f"v{i}", k=4, dim=8, seed=seed + i), [])
        yield f"part {i}"
    w.add(make_video(f"v{N_VIDEOS - 1}", k=4, dim=8, seed=seed + N_VIDEOS - 1), [])
    w.__exit__(None, None, None)
    yield "committed"


def killed_after(cache: Path, seed: int, parts: int) -> None:
    """A child attempt that writes `parts` parts, then is killed with SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(cache), str(seed), str(parts)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()[-2000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def plain_rerun(cache: Path, seed: int) -> dict:
    """What a plain rerun of the job does: skip it when its marker is trusted, then finalize."""
    if not job_done(cache, CFG, 0, 1):
        with ShardWriter(cache, CFG, embed_dim=8, model=TEST_MODEL, max_videos=1) as w:
            for i in range(N_VIDEOS):
                w.add(make_video(f"v{i}", k=4, dim=8, seed=seed + i), [])
    return finalize_cache(cache)


def assert_whole(cache: Path) -> None:
    """The manifest's files all exist and verify, and nothing else is left in shards/."""
    manifest = json.loads((cache / "manifest.json").read_text())
    assert verify_cache(cache) == []
    named = {Path(f["path"]).name for f in manifest["shards"]}
    parts = {p.name for p in (cache / "shards").glob("*.h5")}
    assert parts == named, "garbage of dead or superseded attempts was left behind"
    leftovers = [p.name for p in (cache / "shards").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers
    assert manifest["counts"]["videos"] == N_VIDEOS


def advance(gen, until: str) -> None:
    for step in gen:
        if step == until:
            return
    raise AssertionError(f"attempt ended before {until!r}")


# (name, B's seed relative to A's): equal seeds write equal bytes (a deterministic requeue),
# different seeds differ (a nondeterministic GPU), so the two attempts' part names differ.
CONTENT = [pytest.param(0, id="same-bytes"), pytest.param(100, id="other-bytes")]


@pytest.mark.parametrize("b_seed", CONTENT)
@pytest.mark.parametrize("b_parts", [0, 1, 2], ids=["b-killed-at-start", "b-killed-after-1",
                                                    "b-killed-after-2"])
def test_faults_requeue_killed_while_first_runs(tmp_path, b_seed, b_parts):
    """The issue's row: A has written parts, B (a requeue) starts, writes, is killed; A
    finishes. A's manifest must verify (B's start-up deletes nothing), and a rerun is a no-op."""
    cache = tmp_path / "c"
    a = stepped(cache, 0)
    advance(a, "part 1")
    killed_after(cache, b_seed, b_parts)
    advance(a, "committed")
    finalize_cache(cache)
    assert_whole(cache)
    before = (cache / "manifest.json").read_bytes()
    plain_rerun(cache, 0)
    assert_whole(cache)
    assert (cache / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("b_seed", CONTENT)
def test_faults_first_killed_requeue_finishes(tmp_path, b_seed):
    cache = tmp_path / "c"
    killed_after(cache, 0, 2)
    assert not job_done(cache, CFG, 0, 1)
    b = stepped(cache, b_seed)
    advance(b, "committed")
    finalize_cache(cache)
    assert_whole(cache)


@pytest.mark.parametrize("b_seed", CONTENT)
@pytest.mark.parametrize("order", ["a-commits-last", "b-commits-last"])
def test_faults_both_attempts_finish(tmp_path, b_seed, order):
    cache = tmp_path / "c"
    a, b = stepped(cache, 0), stepped(cache, b_seed)
    advance(a, "part 0")
    advance(b, "part 1")
    advance(a, "part 1")
    first, last = (b, a) if order == "a-commits-last" else (a, b)
    advance(first, "committed")
    advance(last, "committed")
    finalize_cache(cache)
    assert_whole(cache)


@pytest.mark.parametrize("b_seed", CONTENT)
def test_faults_late_commit_after_manifest(tmp_path, b_seed):
    """A commits and the manifest is written; then B, started earlier, commits other bytes.
    The manifest keeps verifying (B deletes none of its files); finalizing again moves it to
    B's files and removes A's."""
    cache = tmp_path / "c"
    a, b = stepped(cache, 0), stepped(cache, b_seed)
    advance(a, "part 1")
    advance(b, "part 0")
    advance(a, "committed")
    finalize_cache(cache)
    advance(b, "committed")
    assert verify_cache(cache) == []
    finalize_cache(cache)
    assert_whole(cache)


def test_faults_both_killed_then_plain_rerun(tmp_path):
    cache = tmp_path / "c"
    killed_after(cache, 0, 2)
    killed_after(cache, 0, 1)
    assert not job_done(cache, CFG, 0, 1) and not (cache / "manifest.json").exists()
    with pytest.raises(JobsUnfinished, match="no finished shard jobs"):
        finalize_cache(cache)
    plain_rerun(cache, 0)
    assert_whole(cache)


@pytest.mark.parametrize("damage", ["deleted", "corrupted", "truncated"])
def test_faults_marker_trusted_only_with_its_files(tmp_path, damage, caplog):
    """A marker whose files are missing or differ is not trusted: the job counts as unfinished,
    finalize names it, and a plain rerun redoes it."""
    cache = tmp_path / "c"
    plain_rerun(cache, 0)
    (cache / "manifest.json").unlink()
    victim = sorted((cache / "shards").glob("*.h5"))[1]
    if damage == "deleted":
        victim.unlink()
    elif damage == "corrupted":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:
        victim.write_bytes(victim.read_bytes()[:-10])
    assert not job_done(cache, CFG, 0, 1)
    assert "cannot be trusted" in caplog.text and victim.name in caplog.text
    with pytest.raises(JobsUnfinished, match=f"job 0's marker cannot be trusted: .*{victim.name}"):
        finalize_cache(cache)
    assert not (cache / "manifest.json").exists()
    plain_rerun(cache, 0)
    assert_whole(cache)


def test_faults_no_flock_needed_names_are_attempt_unique(tmp_path):
    """Two attempts in flight hold distinct claims and temporary names; neither's start-up
    removes the other's claim (the commit point is the marker rename, not a lock)."""
    cache = tmp_path / "c"
    a, b = stepped(cache, 0), stepped(cache, 100)

    def claims() -> set[str]:
        return {p.name for p in (cache / "shards").glob(".attempt-*")}

    advance(a, "part 0")
    a_claim = claims()
    a_parts = {p.name for p in (cache / "shards").glob("*.h5")}
    advance(b, "started")
    assert len(a_claim) == 1 and len(claims()) == 2
    assert {p.name for p in (cache / "shards").glob("*.h5")} == a_parts  # B deleted nothing
    advance(b, "committed")
    assert a_claim <= claims() and a_parts <= {p.name for p in (cache / "shards").glob("*.h5")}
    advance(a, "committed")
    finalize_cache(cache)
    assert_whole(cache)


def test_faults_attempt_judged_dead_does_not_commit(tmp_path, monkeypatch):
    """An attempt on another host whose heartbeat went stale is judged dead and its parts are
    collected; when it wakes up, its commit finds them gone and refuses (no broken marker)."""
    from videocfr.cache_format.attempts import collect_garbage

    cache = tmp_path / "c"
    w = ShardWriter(cache, CFG, embed_dim=8, model=TEST_MODEL, max_videos=1)
    w.__enter__()
    w.add(make_video("v0", k=4, dim=8, seed=0), [])
    claim = w._attempt.claim
    info = json.loads(claim.read_text())
    claim.write_text(json.dumps({**info, "host": "elsewhere/boot/ns"}))
    monkeypatch.setenv("VIDEOCFR_ATTEMPT_STALE_S", "0")
    assert collect_garbage(cache, 1) >= 2  # its part and its claim
    monkeypatch.delenv("VIDEOCFR_ATTEMPT_STALE_S")
    w.add(make_video("v1", k=4, dim=8, seed=1), [])
    with pytest.raises(JobsUnfinished, match="vanished before this attempt committed"):
        w.__exit__(None, None, None)
    assert not (cache / "shards" / "job-00000-of-00001.json").exists()
    plain_rerun(cache, 0)
    assert_whole(cache)


def test_faults_a_dead_attempts_claim_temp_is_collected(tmp_path):
    """A process killed while it rewrote its claim leaves `.tmp-attempt-JOB.TOKEN.json.TOKEN`;
    the next run's garbage collection removes it (and only the dead attempt's files)."""
    from videocfr.cache_format.attempts import collect_garbage

    shards = tmp_path / "shards"
    shards.mkdir()
    dead = ".tmp-attempt-00000-of-00001.d291abc4dfd1.json.d291abc4dfd1"
    other_job = ".tmp-attempt-00001-of-00002.0123456789ab.json.0123456789ab"
    unrelated = "notes.txt"
    for name in (dead, other_job, unrelated):
        (shards / name).write_text("{")
    assert collect_garbage(tmp_path, num_jobs=1) == 1
    assert sorted(p.name for p in shards.iterdir()) == sorted([other_job, unrelated])
