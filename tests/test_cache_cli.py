"""`videocfr cache info|show|verify|merge` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from synthetic_cache import make_cache
from videocfr.cache_format import Cache


def videocfr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videocfr", *args], capture_output=True,
                          text=True)


def test_info_reports_counts_model_and_failures(tmp_path):
    make_cache(tmp_path / "c", n_videos=3, n_failed=1)
    out = videocfr("cache", "info", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    assert "videos 4" in out.stdout and "questions 6" in out.stdout
    assert "synthetic (random)" in out.stdout
    assert "bad000: decode failed: moov atom not found" in out.stdout
    data = json.loads(videocfr("cache", "info", str(tmp_path / "c"), "--json").stdout)
    assert data["counts"]["failed_videos"] == 1 and data["config"]["sampling"]["num_frames"] == 8


def test_show_json_video_and_question(tmp_path):
    make_cache(tmp_path / "c", n_videos=2, k=6)
    out = videocfr("cache", "show", str(tmp_path / "c"), "vid001", "--question", "q1", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    video = Cache(tmp_path / "c").video("vid001")
    assert data["video_id"] == "vid001" and data["status"] == "ok" and data["error"] == ""
    assert data["fps"] == 25.0 and data["num_frames"] == 250
    assert data["frame_indices"] == video.frame_indices.tolist()
    assert data["timestamps"] == video.timestamps.tolist()
    assert data["scenes"] == [[0, 125], [125, 250]]
    q = data["question"]
    assert set(q["saliences"]) == {"uniform", "scene", "semantic"}
    assert len(q["prior"]) == 6 and abs(sum(q["prior"]) - 1) < 1e-5
    np.testing.assert_allclose(q["prior"], Cache(tmp_path / "c").prior("vid001", "q1"))
    failed = json.loads(videocfr("cache", "show", str(tmp_path / "c"), "bad000", "--json").stdout)
    assert failed["status"] == "failed" and failed["frame_indices"] == []


def test_show_unknown_video_names_close_ids(tmp_path):
    make_cache(tmp_path / "c", n_videos=2)
    out = videocfr("cache", "show", str(tmp_path / "c"), "vid0001")
    assert out.returncode == 2 and "vid0001" in out.stderr and "vid001" in out.stderr


def test_verify_exit_codes_name_the_shard(tmp_path):
    make_cache(tmp_path / "c", n_videos=4, max_videos=2)
    ok = videocfr("cache", "verify", str(tmp_path / "c"))
    assert ok.returncode == 0 and "OK" in ok.stdout
    shard = sorted((tmp_path / "c/shards").glob("*.h5"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    bad = videocfr("cache", "verify", str(tmp_path / "c"))
    assert bad.returncode == 1
    assert shard.name in bad.stderr and "sha256" in bad.stderr


def test_merge_command(tmp_path):
    make_cache(tmp_path / "a", n_videos=2, prefix="a")
    make_cache(tmp_path / "b", n_videos=2, prefix="b", seed=100)
    out = videocfr("cache", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "-o",
                   str(tmp_path / "m"))
    assert out.returncode == 0, out.stderr
    assert len(Cache(tmp_path / "m")) == 8
    assert videocfr("cache", "verify", str(tmp_path / "m")).returncode == 0


def test_top_level_usage_and_unknown_command():
    assert videocfr("--help").returncode == 0
    out = videocfr("nonsense")
    assert out.returncode == 2 and "unknown command" in out.stderr


def test_reading_a_cache_needs_only_the_core_install(tmp_path):
    """cache_format (and `videocfr cache`) never import the heavy extras."""
    make_cache(tmp_path / "c", n_videos=2)
    code = (
        "import sys; from videocfr.cli import main; from videocfr.cache_format import PriorTable\n"
        f"PriorTable.load({str(tmp_path / 'c')!r}).get('vid001', 'q0')\n"
        f"assert main(['cache', 'verify', {str(tmp_path / 'c')!r}]) == 0\n"
        "heavy = {'torch', 'cv2', 'decord', 'open_clip', 'transformers', 'deepspeed', 'yaml',\n"
        "         'scenedetect', 'videocfr.precompute',\n"
        "         'videocfr.train'} & set(sys.modules)\n"
        "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
