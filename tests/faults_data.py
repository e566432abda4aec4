"""Shared helpers of the tests/test_faults_*.py files: a three-clip dataset and CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import videos as clips

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = """\
sampling: {num_frames: 8, short_side: 64}
clip: {model: videocfr-tiny, pretrained: none}
decode: {timeout_s: 120, prefetch: 2}
shards: {max_videos: 1}
"""
VIDEO_IDS = ("a", "b", "c")


def make_dataset(root: Path) -> tuple[Path, Path]:
    """Three short clips with one question each, one shard part per video; (dataset, config)."""
    vids = root / "videos"
    vids.mkdir(parents=True)
    for vid, cuts in zip(VIDEO_IDS, ([12], [], [8, 20])):
        clips.colour_segments(vids, cuts, 30, size=(64, 48), name=f"{vid}.mp4")
    recs = [{"video_id": v, "video": f"{v}.mp4", "question_id": "q0", "question": "Colour?",
             "answer": "A", "options": ["A. red", "B. green"]} for v in VIDEO_IDS]
    (root / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    ds = root / "ds.yaml"
    ds.write_text("annotation: ann.jsonl\nvideo_root: videos\nformat: native\n")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    return ds, cfg


def cli(ds: Path, cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "videocfr.precompute.cli", "--config", str(cfg),
            "--dataset", str(ds), "--out", str(out), *extra]


def env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", **extra)


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    """A precompute CLI in its own session (so the test can find every process it starts)."""
    return subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def session_processes(sid: int) -> list[str]:
    """'pid cmdline' of every live (non-zombie) process whose session id is `sid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(f"{entry} {cmd[:120]}")
    return found


def leftovers(cache: Path) -> list[str]:
    """Temporary files and claims left in a cache's shards/."""
    shards = cache / "shards"
    return sorted(p.name for p in shards.iterdir() if p.name.startswith(".")) \
        if shards.is_dir() else []
