"""Scene detection fed from the decode pass (PySceneDetect's own detectors, no second decode).

`scenedetect.detect(path, detector)` opens the file and decodes it again. Here the decode pass
(precompute/decode.py) already visits every frame, so it hands each frame to a `SceneTracker`,
which downsizes it and calls the detector's `process_frame` exactly as PySceneDetect's
`SceneManager` does. At the end the cuts become scenes the way `SceneManager.get_scene_list`
turns them into scenes, with one difference: a video without a cut is ONE scene spanning the
whole video (PySceneDetect returns an empty list there), so the scenes always cover the video.

Scenes are int64 [S, 2] rows [start_frame, end_frame) in the file's frame numbers.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Detector name -> class name in scenedetect.detectors (imported lazily: scenedetect pulls in cv2).
DETECTORS: dict[str, str] = {
    "adaptive": "AdaptiveDetector",
    "content": "ContentDetector",
    "threshold": "ThresholdDetector",
    "histogram": "HistogramDetector",
    "hash": "HashDetector",
}


def _detector_class(name: str) -> type:
    import scenedetect.detectors as detectors

    return getattr(detectors, DETECTORS[name])


@dataclass
class SceneConfig:
    """How scenes are detected.

    Args:
        detector: PySceneDetect detector: "adaptive" (AdaptiveDetector, default), "content",
            "threshold" (fades), "histogram" or "hash".
        params: keyword arguments passed unchanged to the detector's constructor, e.g.
            {"adaptive_threshold": 3.0} or {"threshold": 27.0}; PySceneDetect's defaults otherwise.
        min_scene_len: shortest scene in frames (PySceneDetect's `min_scene_len`, default 15).
        downscale_width: frames are resized to this width (keeping aspect ratio) before the
            detector sees them, as PySceneDetect's auto-downscale does (256 there); 0 keeps the
            decoded size. Frames narrower than this are used as they are.
    """

    detector: str = "adaptive"
    params: dict[str, Any] = field(default_factory=dict)
    min_scene_len: int = 15
    downscale_width: int = 256

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"scenes.detector: unknown detector {self.detector!r}; "
                             f"choose one of {sorted(DETECTORS)}")
        if not isinstance(self.params, dict):
            raise ValueError(f"scenes.params must be a mapping of detector arguments, "
                             f"got {type(self.params).__name__}")
        if "min_scene_len" in self.params:
            raise ValueError("scenes.params: set min_scene_len as scenes.min_scene_len, "
                             "not inside params")
        if not isinstance(self.min_scene_len, int) or self.min_scene_len < 0:
            raise ValueError(f"scenes.min_scene_len must be an int >= 0 (frames), "
                             f"got {self.min_scene_len!r}")
        if not isinstance(self.downscale_width, int) or self.downscale_width < 0:
            raise ValueError(f"scenes.downscale_width must be an int >= 0 (0 = no resize), "
                             f"got {self.downscale_width!r}")
        # Unknown detector arguments fail here, not in the middle of a shard.
        accepted = set(inspect.signature(_detector_class(self.detector).__init__).parameters)
        accepted -= {"self", "min_scene_len"}
        for key in self.params:
            if key not in accepted:
                raise ValueError(f"scenes.params: unknown argument {key!r} for the "
                                 f"{self.detector!r} detector; accepted: {sorted(accepted)}")

    def make_detector(self):
        """A fresh PySceneDetect detector (detectors hold state: one per video)."""
        return _detector_class(self.detector)(min_scene_len=self.min_scene_len, **self.params)


def cuts_to_scenes(cuts: list[int] | np.ndarray, num_frames: int) -> np.ndarray:
    """Turn cut frames into scenes covering [0, num_frames).

    Args:
        cuts: frame numbers where a new scene starts (any order; 0, duplicates and frames
            >= num_frames are ignored).
        num_frames: frames in the video (> 0).

    Returns:
        int64 [S, 2], rows [start, end), contiguous, first start 0, last end num_frames.
        No cut gives one scene [[0, num_frames]].
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be > 0, got {num_frames}")
    inner = sorted({int(c) for c in cuts if 0 < int(c) < num_frames})
    bounds = np.array([0, *inner, num_frames], dtype=np.int64)
    return np.stack([bounds[:-1], bounds[1:]], axis=1)


class SceneTracker:
    """Runs one PySceneDetect detector over frames handed to it one at a time.

    Usage (the decode pass does this)::

        tracker = SceneTracker(SceneConfig(), fps=25.0)
        for frame_num, frame in enumerate(frames):   # uint8 [H, W, 3], consecutive numbers
            tracker.update(frame_num, frame)
        scenes = tracker.finish(num_frames)          # int64 [S, 2]

    Args:
        config: which detector and how small the frames get.
        fps: the video's frame rate (detectors convert `min_scene_len` given in seconds with it).
        rgb: True when frames come in RGB order (decord); PySceneDetect expects BGR.
    """

    def __init__(self, config: SceneConfig, fps: float, rgb: bool = True):
        import cv2
        from scenedetect import FrameTimecode

        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self._cv2 = cv2
        self._timecode = FrameTimecode
        self.config = config
        self.rgb = rgb
        self._rate = Fraction(fps).limit_denominator(1001 * 1000)
        self._detector = config.make_detector()
        self._cuts: list[int] = []
        self._size: tuple[int, int] | None = None  # (width, height) fed to the detector
        self._last: int | None = None

    def _small(self, frame: np.ndarray) -> np.ndarray:
        """Downsize to `downscale_width` and reorder to contiguous BGR."""
        if self._size is None:
            h, w = frame.shape[:2]
            target = self.config.downscale_width
            if target and w > target:
                self._size = (target, max(1, round(h * target / w)))
            else:
                self._size = (w, h)
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = self._cv2.resize(frame, self._size, interpolation=self._cv2.INTER_LINEAR)
        if self.rgb:
            return self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2BGR)
        return np.ascontiguousarray(frame)

    def update(self, frame_num: int, frame: np.ndarray) -> None:
        """Feed the next frame.

        Args:
            frame_num: its frame number in the file; consecutive (one more than the last).
            frame: uint8 [H, W, 3] in RGB (or BGR when rgb=False), any size.
        """
        if self._last is not None and frame_num != self._last + 1:
            raise ValueError(f"SceneTracker needs consecutive frames: got {frame_num} after "
                             f"{self._last}")
        self._last = frame_num
        timecode = self._timecode(int(frame_num), fps=self._rate)
        for cut in self._detector.process_frame(timecode, self._small(frame)):
            self._cuts.append(int(cut.frame_num))

    def cuts(self) -> list[int]:
        """Flush the detector and return every cut frame (start of a new scene) it found."""
        if self._last is None:
            raise ValueError("SceneTracker.cuts() before any frame was fed")
        end = self._timecode(int(self._last), fps=self._rate)
        for cut in self._detector.post_process(end):
            self._cuts.append(int(cut.frame_num))
        return sorted(set(self._cuts))

    def finish(self, num_frames: int | None = None) -> np.ndarray:
        """Flush the detector and return the scenes.

        Args:
            num_frames: frames in the video; defaults to one past the last frame fed.

        Returns:
            int64 [S, 2] scenes [start, end) covering [0, num_frames).
        """
        if self._last is None:
            raise ValueError("SceneTracker.finish() before any frame was fed")
        cuts = self.cuts()
        total = self._last + 1 if num_frames is None else int(num_frames)
        return cuts_to_scenes(cuts, total)
