"""Build V-NIAH haystacks: videos with a needle at a known depth and a question about it.

LongVA's protocol (vision_niah/eval_vision_niah.py), scaled to the machine. LongVA samples its
haystack at one frame per second and inserts one needle frame at index int(d·N) of N haystack
frames. Here the timeline has one step per second too: a haystack of L seconds is written at
`fps` video frames per second, and with precompute sampling one candidate per second
(`sampling.fps: 1`, K = L, configs/precompute/selection*.yaml and world.yaml) candidate t is the
middle frame of second t. A needle of s seconds (s = 1 for one frame) is inserted at second
int(d·N), N = L - s: the video is L seconds long.

Needle kinds (each reported as its own kind):

- `frame`: LongVA's kind — one frame unlike the haystack (a world object on a plain
  background), inserted at int(d·N): one candidate, a visual outlier;
- `held`: the same frame held for `needle_s` seconds (s candidates: s times the chance);
- `overlay`: a world object drawn onto the haystack's own frames for one second, and a
  distractor object of the same size drawn on every other second (one object per second
  throughout), never sharing the attribute the question keys on (world.captions'
  distractor_exclude): the needle differs from them only in what the question asks, so it is
  not a visual outlier and only a query-aware signal can find it.

Haystack kinds: `calm` (one continuous clip without hard cuts, played back and forth) and
`cuts` (clips concatenated, a cut every `cut_every_s` seconds, as a movie).

Every random choice of one haystack (source, offset, object, question, answer letter,
distractors) comes from its own generator seeded by (seed, crc32(video_id)) — a stable hash, not
Python's salted str hash — so a haystack is the same whatever else the grid holds.
The question asks for the needle's colour or shape, options from the world's vocabulary.

Output (under OUT): `videos/*.mp4`, `annotations.json` (the native dataset format precompute
reads, each record with `needle_frames` [start, end) in file frame numbers), `dataset.yaml`
(for `videocfr precompute --dataset`) and `needles.json` (the ground truth: per video its kinds,
L, d, the needle's seconds, object and answer).
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from videocfr.world.captions import ASKED, distractor_exclude, make_question
from videocfr.world.frames import default_sources, read_source
from videocfr.world.objects import WORLD_VERSION, draw, sample_object

log = logging.getLogger(__name__)

HAYSTACKS = ("calm", "cuts")
NEEDLES = ("frame", "held", "overlay")
DEFAULT_NEEDLES = ("frame", "overlay")
LONGVA_LENGTHS = tuple(range(200, 3001, 200))
LONGVA_DEPTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# The CPU grid: lengths that are no multiple of 4 and off-centre depths, so that no strategy's
# fixed positions (uniform's segment centres floor((i + 0.5) K / n)) line up with the needles
# (`grid_alignment` measures it; tests check it).
SMALL_LENGTHS = (50, 130, 210)
SMALL_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
BACKGROUND = (128, 128, 128)  # the plain background of frame and held needles


@dataclass(frozen=True)
class BuildConfig:
    """What to build.

    Args:
        lengths: haystack lengths L in seconds (= K candidates at one per second).
        depths: relative needle depths d in [0, 1].
        haystacks, needles: kinds to build (all combinations).
        fps: video frames per second, an integer (8: a 4 s shot is 32 frames, longer than the
            scene detector's default minimum scene of 15 frames, so its cuts are seen).
        size: (width, height) of the written videos.
        needle_s: seconds a `held` needle is held (an integer >= 2; frame and overlay: 1).
        cut_every_s: seconds between cuts of a `cuts` haystack.
        seed: seeds every haystack's generator (with its video id).
        asked: what every question asks ("colour" or "shape"); None draws it per haystack.
    """

    lengths: tuple[int, ...] = SMALL_LENGTHS
    depths: tuple[float, ...] = LONGVA_DEPTHS
    haystacks: tuple[str, ...] = HAYSTACKS
    needles: tuple[str, ...] = DEFAULT_NEEDLES
    fps: int = 8
    size: tuple[int, int] = (160, 90)
    needle_s: int = 2
    cut_every_s: float = 4.0
    seed: int = 0
    asked: str | None = None

    def __post_init__(self):
        if self.asked is not None and self.asked not in ASKED:
            raise ValueError(f"asked must be one of {ASKED} or None, got {self.asked!r}")
        if not (float(self.needle_s).is_integer() and self.needle_s >= 2):
            raise ValueError(f"needle_s (the held needle's seconds) must be an integer >= 2, got "
                             f"{self.needle_s}; a 1 s needle is the `frame` kind")
        if any(not 0 <= d <= 1 for d in self.depths):
            raise ValueError(f"depths must be in [0, 1], got {self.depths}")
        if any(int(length) != length or length <= self.needle_s for length in self.lengths):
            raise ValueError(f"haystack lengths must be whole seconds above needle_s="
                             f"{self.needle_s}, got {self.lengths}")
        for kinds, allowed in ((self.haystacks, HAYSTACKS), (self.needles, NEEDLES)):
            if not kinds or set(kinds) - set(allowed):
                raise ValueError(f"kinds {kinds} must be a non-empty subset of {allowed}")
        if int(self.fps) != self.fps or self.fps < 1 or min(self.size) < 16:
            raise ValueError(f"fps must be a whole number >= 1 and size at least 16x16, got "
                             f"{self.fps}, {self.size}")

    def span(self, needle: str) -> int:
        """Seconds (= candidates) the needle covers."""
        return int(self.needle_s) if needle == "held" else 1


def needle_second(depth: float, length: int, span: int) -> int:
    """LongVA's insertion index int(d·N) on a timeline of N = L - span haystack seconds."""
    return int(depth * (length - span))


def chance_hit_rate(k: int, m: int, n: int) -> float:
    """Exact expected hit rate of n of K candidates drawn at random without replacement when m of
    them are needle candidates: 1 - C(K - m, n) / C(K, n)."""
    if not 0 <= m <= k or not 1 <= n <= k:
        raise ValueError(f"chance needs 0 <= m <= K and 1 <= n <= K, got K={k}, m={m}, n={n}")
    return 1.0 - math.comb(k - m, n) / math.comb(k, n)


def grid_alignment(lengths, depths, span: int, budgets) -> dict[int, dict[str, float]]:
    """Per budget n: the hit rate over the grid of the query-agnostic fixed choices — uniform's
    segment centres floor((i + 0.5) K / n) (also prior-its and scene-reps' fill on a flat
    prior) and bolt-its on flat scores — beside the chance rate, with K = L candidates."""
    from ..strategies import uniform_positions

    out = {}
    for n in budgets:
        rows = {"uniform": [], "bolt_flat": [], "chance": []}
        for length in lengths:
            if n > length:
                continue
            cdf = np.arange(1, length + 1) / length
            bolt = set(np.searchsorted(cdf, np.linspace(1 / n, 1 - 1 / n, n)).tolist())
            uni = set(uniform_positions(length, n).tolist())
            for d in depths:
                needle = set(range(needle_second(d, length, span),
                                   needle_second(d, length, span) + span))
                rows["uniform"].append(bool(needle & uni))
                rows["bolt_flat"].append(bool(needle & bolt))
                rows["chance"].append(chance_hit_rate(length, span, n))
        out[n] = {key: float(np.mean(v)) for key, v in rows.items() if v}
        out[n]["haystacks"] = len(rows["chance"])
    return out


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
            src = src[:, :, ::-1]  # a mirrored shot: another camera angle, another cut
        parts.append(ping_pong(src, every, start=int(rng.integers(len(src)))))
    return np.concatenate(parts)[:n]


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
    """Ground truth of one haystack (times in seconds; `second` is the needle's candidate)."""

    video_id: str
    haystack: str
    needle: str
    length_s: float
    depth: float
    start_s: float
    end_s: float
    colour: str
    answer: str
    shape: str = ""
    asked: str = ""
    answer_text: str = ""


def haystack_rng(seed: int, video_id: str) -> np.random.Generator:
    """The generator of one haystack: (seed, crc32 of its id), stable across processes."""
    return np.random.default_rng([seed, zlib.crc32(video_id.encode())])


def make_haystack(config: BuildConfig, sources: list[np.ndarray], hk: str, nk: str,
                  length: int, depth: float, video_id: str):
    """uint8 [L·fps, H, W, 3] frames of one haystack, its needle second, object and question."""
    rng = haystack_rng(config.seed, video_id)
    fps, span = int(config.fps), config.span(nk)
    first = needle_second(depth, length, span)
    target = sample_object(rng)
    question = make_question(rng, target, asked=config.asked)
    base_s = length if nk == "overlay" else length - span  # frame/held needles are inserted
    hay = (calm_haystack(sources, base_s * fps, rng) if hk == "calm" else
           cuts_haystack(sources, base_s * fps,
                         max(2, int(round(config.cut_every_s * fps))), rng))
    if nk == "overlay":
        exclude = distractor_exclude(target, question.asked)
        out = np.empty_like(hay)
        for t in range(length):
            obj = target if first <= t < first + span else sample_object(
                rng, exclude=exclude, size=target.size)
            for i in range(t * fps, (t + 1) * fps):
                out[i] = draw(hay[i], obj)
    else:
        plain = draw(np.full(hay.shape[1:], BACKGROUND, np.uint8), target)
        plain = plain[None].repeat(span * fps, axis=0)
        out = np.concatenate([hay[:first * fps], plain, hay[first * fps:]])
    return out, first, target, question


def build(out: str | Path, config: BuildConfig = BuildConfig(),
          sources: list[Path] | None = None) -> list[Needle]:
    """Write the haystacks, their questions and ground truth under `out`; returns the needles."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    sources = sources or default_sources()
    frames = [read_source(p, config.fps, config.size) for p in sources]
    needles, records = [], []
    grid = [(hk, nk, length, depth) for hk in config.haystacks for nk in config.needles
            for length in config.lengths for depth in config.depths]
    fps = int(config.fps)
    for hk, nk, length, depth in tqdm(grid, desc="vniah build", unit="haystack"):
        video_id = f"{hk}-{nk}-L{length:04d}-d{int(round(depth * 100)):03d}"
        hay, first, target, q = make_haystack(config, frames, hk, nk, int(length), depth,
                                              video_id)
        assert len(hay) == length * fps, (len(hay), length, fps)
        write_video(hay, out / "videos" / f"{video_id}.mp4", fps)
        span = config.span(nk)
        needles.append(Needle(video_id, hk, nk, float(length), float(depth), float(first),
                              float(first + span), target.colour, q.answer, target.shape,
                              q.asked, q.answer_text))
        records.append({
            "video_id": video_id, "video": f"videos/{video_id}.mp4", "question_id": "needle",
            "question": q.question, "options": q.options, "answer": q.answer,
            "problem_type": "multiple choice",
            # [start, end) file frames: the selector's ground truth
            "needle_frames": [first * fps, (first + span) * fps]})
    (out / "annotations.json").write_text(json.dumps(records, indent=1))
    (out / "dataset.yaml").write_text(
        "# V-NIAH haystacks written by `videocfr evaluate vniah build`\n"
        "annotation: annotations.json\nformat: native\nvideo_root: .\n")
    (out / "needles.json").write_text(json.dumps(
        {"config": asdict(config), "world_version": WORLD_VERSION,
         "sources": [str(p) for p in sources], "needles": [asdict(x) for x in needles]},
        indent=1))
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
