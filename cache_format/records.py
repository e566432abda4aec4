"""In-memory records of one video and one question, as written to and read from a shard.

A video record holds the K sampled frames (K may differ between videos when sampling by fps);
a failed video holds no frames at all, only its status and error. A question record holds the
per-source saliences and the fused consensus prior over its video's K frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fusion import QFRAME_ARRAYS, SALIENCES
from .schema import SchemaError

STATUS_OK = "ok"
STATUS_FAILED = "failed"


def _array(value, dtype, name: str, owner: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise SchemaError(f"{owner}: {name} must be numeric, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


@dataclass
class VideoRecord:
    """One video of a cache.

    Args:
        video_id: key of the video, unique within a cache.
        path: the video's path as given by the dataset, relative to the dataset's video root.
        content_hash: sha256 (hex) of the file's bytes; "" when the file could not be read.
        status: "ok" or "failed".
        error: why the video failed ("" when ok).
        fps: average frame rate reported by the decoder.
        duration: decodable duration in seconds.
        num_frames: decodable frames in the file.
        frame_indices: int64 [K], the sampled frames, ascending.
        timestamps: float64 [K], seconds of the sampled frames.
        scenes: int64 [S, 2], scenes as [start_frame, end_frame) in file frame numbers.
        frame_scene: int32 [K], the scene of each sampled frame (row of `scenes`).
        scene_rep: bool [K], True where the frame represents its scene.
        embeddings: float16 [K, D], L2-normalised CLIP image embeddings.
    """

    video_id: str
    path: str
    content_hash: str
    status: str = STATUS_OK
    error: str = ""
    fps: float = 0.0
    duration: float = 0.0
    num_frames: int = 0
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    scenes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    frame_scene: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    scene_rep: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))

    @classmethod
    def failed(cls, video_id: str, path: str, error: str, content_hash: str = "") -> VideoRecord:
        """A video that could not be processed: no frames, only the reason."""
        if not error:
            raise ValueError(f"video {video_id!r}: a failed record needs a non-empty error")
        return cls(video_id=video_id, path=path, content_hash=content_hash,
                   status=STATUS_FAILED, error=error)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def num_sampled(self) -> int:
        return int(self.frame_indices.shape[0])

    def validate(self, embed_dim: int | None = None) -> VideoRecord:
        """Coerce dtypes and check shapes; raises SchemaError naming the field."""
        who = f"video {self.video_id!r}"
        if not isinstance(self.video_id, str) or not self.video_id:
            raise SchemaError(f"video_id must be a non-empty string, got {self.video_id!r}")
        if self.status not in (STATUS_OK, STATUS_FAILED):
            raise SchemaError(f"{who}: status must be 'ok' or 'failed', got {self.status!r}")
        self.frame_indices = _array(self.frame_indices, np.int64, "frame_indices", who)
        self.timestamps = _array(self.timestamps, np.float64, "timestamps", who)
        self.scenes = _array(self.scenes, np.int64, "scenes", who).reshape(-1, 2)
        self.frame_scene = _array(self.frame_scene, np.int32, "frame_scene", who)
        self.scene_rep = _array(self.scene_rep, bool, "scene_rep", who)
        self.embeddings = _array(self.embeddings, np.float16, "embeddings", who)
        k = self.num_sampled
        if self.status == STATUS_FAILED:
            if k or self.embeddings.size:
                raise SchemaError(f"{who}: a failed video holds no frames")
            if not self.error:
                raise SchemaError(f"{who}: a failed video needs an error message")
            return self
        if k == 0 or k % 2:
            raise SchemaError(f"{who}: K = {k} sampled frames; K must be even and > 0")
        for name in ("timestamps", "frame_scene", "scene_rep"):
            if getattr(self, name).shape != (k,):
                raise SchemaError(f"{who}: {name} has shape {getattr(self, name).shape}, "
                                  f"expected ({k},)")
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != k:
            raise SchemaError(f"{who}: embeddings have shape {self.embeddings.shape}, "
                              f"expected ({k}, D)")
        if embed_dim is not None and self.embeddings.shape[1] != embed_dim:
            raise SchemaError(f"{who}: embedding dim {self.embeddings.shape[1]} != the cache's "
                              f"{embed_dim}")
        if np.any(np.diff(self.frame_indices) < 0):
            raise SchemaError(f"{who}: frame_indices must be ascending")
        if len(self.scenes) == 0:
            raise SchemaError(f"{who}: an ok video has at least one scene")
        if self.frame_scene.min() < 0 or self.frame_scene.max() >= len(self.scenes):
            raise SchemaError(f"{who}: frame_scene points outside the {len(self.scenes)} scenes")
        if not np.isfinite(self.timestamps).all() or not np.isfinite(self.embeddings).all():
            raise SchemaError(f"{who}: timestamps and embeddings must be finite")
        return self


@dataclass
class QuestionRecord:
    """One question about a video, with its saliences and consensus prior over the K frames.

    Args:
        video_id: the video this question is about.
        question_id: key of the question, unique within its video.
        question: question text.
        options: answer options ("A. ..."), empty for open questions.
        answer: ground-truth answer (a letter for multiple choice).
        problem_type: Video-R1 type: multiple choice, numerical, OCR, free-form, regression.
        text_embedding: float16 [D], L2-normalised CLIP embedding of the question text.
        uniform, scene, semantic: float32 [K] per-source saliences in [0, 1] (METHOD §2): one
            field per stored source of fusion.SOURCES (SALIENCES).
        semantic_raw: float32 [K] max cosine before min-max normalisation.
        prior: float32 [K] fused consensus prior, sums to 1 (METHOD §3).
    """

    video_id: str
    question_id: str
    question: str
    options: list[str]
    answer: str
    problem_type: str
    text_embedding: np.ndarray
    uniform: np.ndarray
    scene: np.ndarray
    semantic: np.ndarray
    semantic_raw: np.ndarray
    prior: np.ndarray

    SALIENCES = SALIENCES

    @property
    def key(self) -> tuple[str, str]:
        return (self.video_id, self.question_id)

    def saliences(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.SALIENCES}

    def validate(self, num_frames: int, embed_dim: int | None = None,
                 atol: float = 1e-5) -> QuestionRecord:
        """Coerce dtypes, check shapes, ranges and Σprior = 1; raises SchemaError."""
        who = f"question {self.key!r}"
        if not isinstance(self.question_id, str) or not self.question_id:
            raise SchemaError(f"{who}: question_id must be a non-empty string")
        self.options = [str(o) for o in (self.options or [])]
        self.text_embedding = _array(self.text_embedding, np.float16, "text_embedding", who)
        if embed_dim is not None and self.text_embedding.shape != (embed_dim,):
            raise SchemaError(f"{who}: text_embedding has shape {self.text_embedding.shape}, "
                              f"expected ({embed_dim},)")
        for name in QFRAME_ARRAYS:
            arr = _array(getattr(self, name), np.float32, name, who)
            if arr.shape != (num_frames,):
                raise SchemaError(f"{who}: {name} has shape {arr.shape}, expected "
                                  f"({num_frames},) — one value per sampled frame")
            if not np.isfinite(arr).all():
                raise SchemaError(f"{who}: {name} contains NaN or inf")
            setattr(self, name, arr)
        for name in self.SALIENCES:
            arr = getattr(self, name)
            if arr.min() < 0 or arr.max() > 1:
                raise SchemaError(f"{who}: salience {name} leaves [0, 1]")
        if self.prior.min() < 0 or abs(float(self.prior.sum(dtype=np.float64)) - 1) > atol:
            raise SchemaError(f"{who}: prior must be >= 0 and sum to 1 within {atol}, "
                              f"sum = {float(self.prior.sum(dtype=np.float64))!r}")
        return self
