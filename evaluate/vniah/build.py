"""Build V-NIAH haystacks: videos with a needle at a known depth and a question about it.

LongVA's protocol, scaled to the machine: a haystack of L seconds made from input clips, a needle
held for `needle_s` seconds (>= 1) starting at relative depth d (start = d · (L - needle_s)), and
a multiple-choice question whose answer is only in the needle. Two haystack kinds:

- `calm`: one continuous source (a clip without hard cuts) played forward and backward
  (ping-pong): no cuts at all;
- `cuts`: segments of the sources concatenated, a cut every `cut_every_s` seconds, as a movie.

Two needle kinds:

- `clip`: whole frames of a needle unlike the haystack (a coloured disc on a contrasting
  background), LongVA's kind: a visual outlier;
- `overlay`: a small coloured disc drawn onto the haystack's own frames for the needle's span:
  not an outlier, so only a query-aware signal can find it.

Output (under OUT): `videos/*.mp4`, `annotations.json` (the native dataset format precompute
reads, each record with its needle's `needle_frames` [start, end)), `dataset.yaml` (for
`videocfr precompute --dataset`) and `needles.json` (the ground truth:
per video its kind, L, d and the needle's span in seconds).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from videocfr.world.frames import default_sources, read_source
from videocfr.world.objects import COLOURS

log = logging.getLogger(__name__)

HAYSTACKS = ("calm", "cuts")
NEEDLES = ("clip", "overlay")
LONGVA_LENGTHS = tuple(range(200, 3001, 200))
LONGVA_DEPTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SMALL_LENGTHS = (60, 150, 240)
SMALL_DEPTHS = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class BuildConfig:
    """What to build.

    Args:
        lengths: haystack lengths L in seconds.
        depths: relative needle depths d in [0, 1].
        haystacks, needles: kinds to build (all combinations).
        fps: frame rate of the written videos (8: a 2 s needle is 16 frames, longer than the
            scene detector's default minimum scene of 15 frames, so its cuts are seen).
        size: (width, height) of the written videos.
        needle_s: how long the needle is held, seconds (>= 1).
        cut_every_s: seconds between cuts of a `cuts` haystack.
        seed: picks sources, offsets, needle colours and answer letters.
    """

    lengths: tuple[int, ...] = SMALL_LENGTHS
    depths: tuple[float, ...] = SMALL_DEPTHS
    haystacks: tuple[str, ...] = HAYSTACKS
    needles: tuple[str, ...] = NEEDLES
    fps: float = 8.0
    size: tuple[int, int] = (320, 180)
    needle_s: float = 2.0
    cut_every_s: float = 4.0
    seed: int = 0

    def __post_init__(self):
        if not self.needle_s >= 1:
            raise ValueError(f"needle_s must be >= 1 s (LongVA holds the needle), got "
                             f"{self.needle_s}")
        if any(not 0 <= d <= 1 for d in self.depths):
            raise ValueError(f"depths must be in [0, 1], got {self.depths}")
        if any(length <= self.needle_s for length in self.lengths):
            raise ValueError(f"every haystack length must exceed needle_s={self.needle_s}")
        for kinds, allowed in ((self.haystacks, HAYSTACKS), (self.needles, NEEDLES)):
            if not kinds or set(kinds) - set(allowed):
                raise ValueError(f"kinds {kinds} must be a non-empty subset of {allowed}")
        if self.fps <= 0 or min(self.size) < 16:
            raise ValueError(f"fps must be > 0 and size at least 16x16, got {self.fps}, "
                             f"{self.size}")


def ping_pong(frames: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """n frames played forward then backward and again: continuous, no cut."""
    cycle = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)])
    return frames[cycle[(start + np.arange(n)) % len(cycle)]]


def has_cut(frames: np.ndarray) -> bool:
    """True when a clip jumps between consecutive frames (a hard cut inside the source)."""
    diff = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    return bool(diff.max() > max(30.0, 4.0 * float(np.median(diff))))


def calm_haystack(sources: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """One continuous source (a clip without cuts), played back and forth."""
    calm = [s for s in sources if not has_cut(s)]
    if not calm:
        raise ValueError("a calm haystack needs a source clip without cuts; every source given "
                         "has a hard cut: pass --sources with a continuous clip")
    src = calm[int(rng.integers(len(calm)))]
    return ping_pong(src, n, start=int(rng.integers(len(src))))


def cuts_haystack(sources: list[np.ndarray], n: int, every: int,
                  rng: np.random.Generator) -> np.ndarray:
    parts, last = [], -1
    while sum(len(p) for p in parts) < n:
        choices = [i for i in range(len(sources)) if i != last] or [0]
        last = int(rng.choice(choices))
        src = sources[last]
        if rng.random() < 0.5:
            src = src[:, ::-1]  # a mirrored shot: another camera angle, another cut
        parts.append(ping_pong(src, every, start=int(rng.integers(len(src)))))
    return np.concatenate(parts)[:n]


def disc_mask(size: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - centre[0] * w) ** 2 + (yy - centre[1] * h) ** 2 < radius ** 2


def needle_frames(kind: str, frames: np.ndarray, colour: str, background: str,
                  rng: np.random.Generator) -> np.ndarray:
    """The needle span's frames: a whole needle clip, or the disc drawn onto the haystack."""
    out = frames.copy()
    h, w = frames.shape[1:3]
    if kind == "clip":
        out[:] = COLOURS[background]
        out[:, disc_mask((w, h), (0.5, 0.5), min(w, h) / 3)] = COLOURS[colour]
    else:
        centre = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.25, 0.75)))
        out[:, disc_mask((w, h), centre, min(w, h) / 10)] = COLOURS[colour]
    return out


def write_video(frames: np.ndarray, path: Path, fps: float) -> None:
    """MP4 (MPEG-4 part 2, which every decoder reads) written with OpenCV."""
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path} (mp4v codec)")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()


@dataclass(frozen=True)
class Needle:
    """Ground truth of one haystack."""

    video_id: str
    haystack: str
    needle: str
    length_s: float
    depth: float
    start_s: float
    end_s: float
    colour: str
    answer: str


def build(out: str | Path, config: BuildConfig = BuildConfig(),
          sources: list[Path] | None = None) -> list[Needle]:
    """Write the haystacks, their questions and ground truth under `out`; returns the needles."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    sources = sources or default_sources()
    frames = [read_source(p, config.fps, config.size) for p in sources]
    rng = np.random.default_rng(config.seed)
    needles, records = [], []
    grid = [(hk, nk, length, depth) for hk in config.haystacks for nk in config.needles
            for length in config.lengths for depth in config.depths]
    for hk, nk, length, depth in tqdm(grid, desc="vniah build", unit="haystack"):
        n = int(round(length * config.fps))
        hay = (calm_haystack(frames, n, rng) if hk == "calm" else
               cuts_haystack(frames, n, max(2, int(round(config.cut_every_s * config.fps))), rng))
        span = int(round(config.needle_s * config.fps))
        first = int(round(depth * (n - span)))
        names = list(COLOURS)
        colour, background = (str(c) for c in rng.choice(names, size=2, replace=False))
        hay[first:first + span] = needle_frames(nk, hay[first:first + span], colour, background,
                                                rng)
        video_id = f"{hk}-{nk}-L{length:04d}-d{int(round(depth * 100)):03d}"
        write_video(hay, out / "videos" / f"{video_id}.mp4", config.fps)
        options = rng.permutation([c for c in names if c != background])[:4].tolist()
        if colour not in options:
            options[int(rng.integers(4))] = colour
        letter = "ABCD"[options.index(colour)]
        needles.append(Needle(video_id, hk, nk, float(length), float(depth),
                              first / config.fps, (first + span) / config.fps, colour, letter))
        records.append({
            "video_id": video_id, "video": f"videos/{video_id}.mp4", "question_id": "needle",
            "question": "What colour is the disc that appears for a moment in the video?",
            "options": [f"{'ABCD'[i]}. {c}" for i, c in enumerate(options)], "answer": letter,
            "problem_type": "multiple choice",
            "needle_frames": [first, first + span]})  # [start, end) frames: the selector's truth
    (out / "annotations.json").write_text(json.dumps(records, indent=1))
    (out / "dataset.yaml").write_text(
        "# V-NIAH haystacks written by `videocfr evaluate vniah build`\n"
        "annotation: annotations.json\nformat: native\nvideo_root: .\n")
    (out / "needles.json").write_text(json.dumps(
        {"config": asdict(config), "sources": [str(p) for p in sources],
         "needles": [asdict(x) for x in needles]}, indent=1))
    log.info("wrote %d haystacks under %s", len(needles), out)
    return needles


def load_needles(build_dir: str | Path) -> list[Needle]:
    """The ground truth written by `build` (ValueError naming the file when malformed)."""
    path = Path(build_dir) / "needles.json"
    try:
        doc = json.loads(path.read_text())
        return [Needle(**x) for x in doc["needles"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a V-NIAH ground truth written by `vniah build` ({err}); "
                         f"run `videocfr evaluate vniah build` first") from err
