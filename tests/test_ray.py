"""`videocfr precompute --engine ray` on a local Ray instance (2 CPUs): retries, timeouts, and
shards byte-identical to the local engine's. Skipped where Ray is not installed."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import pytest
import videos as clips

ray = pytest.importorskip("ray")

from videocfr.precompute.cli import main  # noqa: E402
from videocfr.precompute.ray_engine import RayOptions, ray_map  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    # the toy tasks below live in this test module, which Ray workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def fail_once(marker: str, value: int) -> int:
    """Raises on its first call (no marker yet), returns `value` after."""
    path = Path(marker)
    if not path.exists():
        path.write_text("tried")
        raise RuntimeError("transient failure")
    return value


def hang_once(marker: str, value: int) -> int:
    """Hangs on its first call, returns `value` after; hangs forever when value < 0."""
    path = Path(marker)
    if value < 0 or not path.exists():
        path.write_text("tried")
        time.sleep(600)
    return value


def test_failed_tasks_are_retried(local_ray, tmp_path):
    calls = {i: (str(tmp_path / f"m{i}"), i * 10) for i in range(3)}
    results, errors = ray_map(fail_once, calls, RayOptions(retries=1, poll_s=0.2))
    assert results == {0: 0, 1: 10, 2: 20} and errors == {}
    calls = {7: (str(tmp_path / "n7"), 1)}
    results, errors = ray_map(fail_once, calls, RayOptions(retries=0, poll_s=0.2))
    assert results == {} and "transient failure" in errors[7]


def test_hung_tasks_are_cancelled_and_retried(local_ray, tmp_path):
    calls = {0: (str(tmp_path / "h0"), 5), 1: (str(tmp_path / "h1"), -1)}
    t0 = time.monotonic()
    # the timeout counts from submission, so it includes starting a fresh worker after a cancel
    # (seconds on a loaded machine): keep it well above that
    results, errors = ray_map(hang_once, calls, RayOptions(retries=1, timeout_s=8, poll_s=0.2))
    assert results == {0: 5}
    assert list(errors) == [1] and "timed out" in errors[1]
    assert time.monotonic() - t0 < 120  # the hung tasks were cancelled, not waited for


def shard_hashes(cache: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((cache / "shards").glob("*.h5"))}


def test_ray_engine_writes_the_local_engines_shards(local_ray, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    clips.colour_segments(vids, [20, 45], 60, name="a.mp4")
    clips.colour_segments(vids, [30], 50, name="b.mp4")
    clips.text_as_mp4(vids, name="bad.mp4")
    recs = [{"video_id": v, "video": f"{v}.mp4", "question_id": "q0", "answer": "A",
             "question": "What colour is the screen?", "options": ["A. red", "B. blue"]}
            for v in ("a", "b", "bad")]
    (tmp_path / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    ds = tmp_path / "ds.yaml"
    ds.write_text("annotation: ann.jsonl\nvideo_root: videos\nformat: native\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("sampling: {num_frames: 8, short_side: 64}\n"
                   "clip: {model: videocfr-tiny, pretrained: none}\ndecode: {timeout_s: 120}\n")
    common = ["--config", str(cfg), "--dataset", str(ds), "--num-shards", "2"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray",
                 "--ray-timeout", "300"]) == 0
    local, on_ray = shard_hashes(tmp_path / "local"), shard_hashes(tmp_path / "ray")
    assert len(local) == 2 and on_ray == local
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["counts"]["failed_videos"] == 1
