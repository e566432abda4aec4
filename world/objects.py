"""Objects of the world: a shape, a colour, a size and a position, drawn anti-aliased.

Sizes and positions are relative, so one object draws the same onto frames of any resolution:
`size` is the side of the object's bounding box as a fraction of min(H, W); (x, y) is its centre
as fractions of (W, H). The default position bounds keep an object inside the centre square of
a 16:9 frame (x in [0.25, 0.75]), which is what a CLIP's centre crop sees.

Example:
    >>> rng = np.random.default_rng(0)
    >>> obj = sample_object(rng, exclude=("triangle",))
    >>> frame = draw(np.zeros((180, 320, 3), np.uint8), obj)      # uint8 [H, W, 3], a new array
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Bump whenever what the generator draws or says changes (shapes, colours, bounds, drawing,
# templates, sample layout) or the world models' architectures or training do: models trained under
# another version refuse to load.
WORLD_VERSION = 5

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 190, 60), "blue": (30, 70, 220),
    "yellow": (235, 215, 40), "magenta": (210, 40, 200), "cyan": (40, 200, 210),
}
SIZE_RANGE = (0.14, 0.22)  # bounding-box side / min(H, W)
X_RANGE = (0.25, 0.75)     # centre x / W: inside the centre square of a 16:9 frame
Y_RANGE = (0.2, 0.8)       # centre y / H: an object of the largest size stays inside the frame
_SUBPIXEL = 4              # cv2 fixed-point bits: vertices at 1/16 pixel
SUPERSAMPLE = 4            # shapes are filled at 4x resolution, then area-averaged


@dataclass(frozen=True)
class WorldObject:
    """One object: shape in SHAPES, colour in COLOURS, relative size and centre.

    Args:
        shape: a name of SHAPES.
        colour: a name of COLOURS.
        size: bounding-box side as a fraction of min(H, W) of the frame it is drawn on.
        x, y: centre as fractions of the frame's width and height.
    """

    shape: str
    colour: str
    size: float
    x: float
    y: float

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape {self.shape!r} unknown; use one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour {self.colour!r} unknown; use one of {tuple(COLOURS)}")
        if not 0 < self.size <= 1:
            raise ValueError(f"size must be in (0, 1] (a fraction of min(H, W)), got {self.size}")
        if not (0 <= self.x <= 1 and 0 <= self.y <= 1):
            raise ValueError(f"centre ({self.x}, {self.y}) must be inside the frame, in [0, 1]")

    @property
    def name(self) -> str:
        """"red triangle"."""
        return f"{self.colour} {self.shape}"

    def box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) pixel bounding box on a frame of that size."""
        half = self.size * min(height, width) / 2
        cx, cy = self.x * width, self.y * height
        return cx - half, cy - half, cx + half, cy + half

    def overlaps(self, other: WorldObject, margin: float = 0.02) -> bool:
        """True when the two bounding boxes (plus a margin of min side) touch on a 16:9 frame."""
        h, w = 9.0, 16.0
        a, b = self.box(h, w), other.box(h, w)
        m = margin * h
        return not (a[2] + m <= b[0] or b[2] + m <= a[0] or a[3] + m <= b[1]
                    or b[3] + m <= a[1])


def _check_exclude(exclude: Iterable[str]) -> set[str]:
    out = set(exclude)
    unknown = out - set(SHAPES) - set(COLOURS)
    if unknown:
        raise ValueError(f"exclude names {sorted(unknown)} are neither shapes {SHAPES} nor "
                         f"colours {tuple(COLOURS)}")
    return out


def sample_object(rng: np.random.Generator, *, exclude: Iterable[str] = (),
                  size: float | None = None, shape: str | None = None,
                  colour: str | None = None, avoid: Sequence[WorldObject] = (),
                  tries: int = 200) -> WorldObject:
    """A random object whose shape and colour are not in `exclude`, placed off `avoid`.

    Args:
        rng: the generator (every draw comes from it: same seed, same object).
        exclude: shape and/or colour names the object must not have.
        size: a fixed relative size (default: uniform in SIZE_RANGE).
        shape, colour: fix the shape / colour instead of sampling it.
        avoid: objects already on the frame; the new one does not overlap them.
        tries: placements tried before giving up.

    Raises:
        ValueError: everything excluded, or no free place after `tries` placements.
    """
    exclude = _check_exclude(exclude)
    shapes = [s for s in SHAPES if s not in exclude] if shape is None else [shape]
    colours = [c for c in COLOURS if c not in exclude] if colour is None else [colour]
    if not shapes or not colours:
        raise ValueError(f"exclude={sorted(exclude)} leaves no shape or no colour to draw")
    s = str(shapes[int(rng.integers(len(shapes)))])
    c = str(colours[int(rng.integers(len(colours)))])
    sz = float(rng.uniform(*SIZE_RANGE)) if size is None else float(size)
    for _ in range(tries):
        obj = WorldObject(s, c, sz, float(rng.uniform(*X_RANGE)), float(rng.uniform(*Y_RANGE)))
        if not any(obj.overlaps(o) for o in avoid):
            return obj
    raise ValueError(f"no free place for an object of size {sz:.2f} among {len(avoid)} others "
                     f"after {tries} tries; draw fewer or smaller objects")


def sample_objects(rng: np.random.Generator, count: int, *, exclude: Iterable[str] = (),
                   size: float | None = None, avoid: Sequence[WorldObject] = ()
                   ) -> list[WorldObject]:
    """`count` non-overlapping objects (none overlapping `avoid`), each excluding `exclude`."""
    placed: list[WorldObject] = []
    for _ in range(count):
        placed.append(sample_object(rng, exclude=exclude, size=size,
                                    avoid=list(avoid) + placed))
    return placed


def _polygon(shape: str, cx: float, cy: float, half: float) -> np.ndarray:
    """float [V, 2] pixel vertices of a polygon shape centred at (cx, cy)."""
    if shape == "square":
        h = half * 0.85  # a square fills its box more than a circle: keep the areas comparable
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        pts = [(0.0, -half), (half, half * 0.8), (-half, half * 0.8)]
    elif shape == "cross":
        a, b = half, half * 0.34
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b),
               (-a, b), (-a, -b), (-b, -b)]
    else:
        raise ValueError(f"{shape!r} is not a polygon shape")
    return np.array([(cx + px, cy + py) for px, py in pts], np.float64)


def coverage(height: int, width: int, obj: WorldObject) -> tuple[slice, slice, np.ndarray]:
    """Where the object lies and how much of each pixel there it covers.

    The shape is filled at SUPERSAMPLE x the resolution inside its bounding box (plus a pixel)
    and area-averaged down, so edges blend by their true coverage (anti-aliasing) and the
    covered area matches the shape's geometry.

    Returns:
        (rows, cols, alpha): slices of the frame and float32 [len(rows), len(cols)] in [0, 1].
    """
    import cv2

    x0, y0, x1, y1 = obj.box(height, width)
    r0, r1 = max(0, int(np.floor(y0)) - 1), min(height, int(np.ceil(y1)) + 1)
    c0, c1 = max(0, int(np.floor(x0)) - 1), min(width, int(np.ceil(x1)) + 1)
    k = SUPERSAMPLE
    mask = np.zeros(((r1 - r0) * k, (c1 - c0) * k), np.uint8)
    half = obj.size * min(height, width) / 2 * k
    cx, cy = (obj.x * width - c0) * k, (obj.y * height - r0) * k
    scale = 1 << _SUBPIXEL
    if obj.shape == "circle":
        cv2.circle(mask, (round(cx * scale), round(cy * scale)), round(half * scale), 255,
                   thickness=-1, lineType=cv2.LINE_8, shift=_SUBPIXEL)
    else:
        pts = np.round(_polygon(obj.shape, cx, cy, half) * scale).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_8, shift=_SUBPIXEL)
    small = cv2.resize(mask, (c1 - c0, r1 - r0), interpolation=cv2.INTER_AREA)
    return slice(r0, r1), slice(c0, c1), small.astype(np.float32) / 255.0


def draw(frame: np.ndarray, obj: WorldObject) -> np.ndarray:
    """The frame with the object drawn on it (anti-aliased edges).

    Args:
        frame: uint8 [H, W, 3] RGB (not modified).
        obj: the object.

    Returns:
        uint8 [H, W, 3], a new array: colour blended in by each pixel's `coverage`.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    rows, cols, alpha = coverage(frame.shape[0], frame.shape[1], obj)
    alpha = alpha[..., None]  # (h, w, 1)
    colour = np.array(COLOURS[obj.colour], np.float32)
    out = np.array(frame, copy=True)
    patch = out[rows, cols].astype(np.float32) * (1 - alpha) + colour * alpha
    out[rows, cols] = np.rint(patch).astype(np.uint8)
    return out


def draw_all(frame: np.ndarray, objects: Iterable[WorldObject]) -> np.ndarray:
    """uint8 [H, W, 3]: the frame with every object drawn, in order (a new array)."""
    out = np.asarray(frame)
    drawn = False
    for obj in objects:
        out = draw(out, obj)
        drawn = True
    return out if drawn else np.array(out, copy=True)
