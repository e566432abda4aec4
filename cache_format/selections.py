"""Selection files: the frames a strategy or a trained selector chose, for any harness to read.

A selection file is one JSON document (spec: docs/selections.md) written by `videocfr select
--selection-file`. Per sample it gives the chosen frames as frame numbers of the source video
(decord numbering, the cache's `frame_indices`) with their timestamps, under the video's path
as the cache recorded it, its content hash (sha256 of the file's bytes) and the question id.
The strategy (registry spec, seed) or the selector checkpoint (path, sha256 of its weights) and
the cache's config hash are recorded once for the whole file.

A harness knows a sample by the video path it already has (lmms-eval's tasks hand their model
an absolute path such as `~/.cache/huggingface/videomme/data/fFjv93ACGo8.mp4`): `find_video`
matches that path to the longest stored path it ends with, so the same file serves wherever the
dataset lies. Pure JSON and numpy: no stage, no torch.

`tspo_records` exports TSPO's form: the dataset's records, each with `frame_idx` (float frame
numbers of the source video), as its lmms-eval wrappers read them from the task's documents.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .io import write_json_atomic
from .schema import CacheError

FORMAT = "videocfr-selections"
VERSION = 1
MAX_BYTES = 2 << 30  # a selection file is JSON read whole; refuse anything absurd before parsing


class SelectionError(CacheError):
    """A selection file that is malformed, or that does not fit the video or task it is used on.

    The message names the file, the sample and what to do.
    """


@dataclass(frozen=True)
class Sample:
    """One question's chosen frames.

    Args:
        video_path: the video's path as the cache recorded it (the file's key).
        video_id, question_id: the cache key of the pair.
        question: the question text (to match a harness prompt when it gives no question id).
        frame_indices: int64 [n] ascending frame numbers of the source video.
        timestamps: float64 [n] their times in seconds.
        content_hash: sha256 (hex) of the video file precompute read.
        num_frames: frames of that file.
    """

    video_path: str
    video_id: str
    question_id: str
    question: str
    frame_indices: np.ndarray
    timestamps: np.ndarray
    content_hash: str
    num_frames: int

    @property
    def name(self) -> str:
        return f"{self.video_id}/{self.question_id}"


def build_document(cache, chosen: dict[tuple[str, str], np.ndarray], n: int, strategy: dict,
                   counts: dict | None = None, created_by: str = "") -> dict:
    """The selection document of a cache's chosen candidates.

    Args:
        cache: the opened `Cache` the positions index into.
        chosen: {(video_id, question_id): int64 [n] sorted candidate positions in [0, K)}.
        n: the budget (every entry has n positions).
        strategy: how they were chosen, e.g. {"kind": "registry", "spec": "prior-topn",
            "seed": 0} or {"kind": "selector", "checkpoint": ..., "checkpoint_sha256": ...}.
        counts: what was skipped and why (stored as given).
        created_by: the writing tool and version.

    Returns:
        dict ready for `write_document`.
    """
    videos: dict[str, dict] = {}
    video = None
    for (vid, qid) in sorted(chosen):
        pos = np.asarray(chosen[(vid, qid)], np.int64)
        if pos.shape != (n,):
            raise ValueError(f"{vid}/{qid}: {pos.shape[0]} positions, budget n={n}")
        if video is None or video.video_id != vid:  # keys sorted: one read per video
            video = cache.video(vid)
        entry = videos.get(video.path)
        if entry is None:
            entry = videos[video.path] = {"video_id": vid, "content_hash": video.content_hash,
                                          "num_frames": int(video.num_frames),
                                          "fps": float(video.fps), "questions": {}}
        elif entry["video_id"] != vid:
            raise ValueError(f"videos {entry['video_id']!r} and {vid!r} share the path "
                             f"{video.path!r}; a selection file keys videos by path")
        entry["questions"][qid] = {
            "question": cache.question(vid, qid).question,
            "positions": pos.tolist(),
            "frame_indices": video.frame_indices[pos].astype(np.int64).tolist(),
            "timestamps": [float(t) for t in np.asarray(video.timestamps)[pos]],
        }
    return {"format": FORMAT, "version": VERSION, "created_by": created_by, "n": int(n),
            "strategy": strategy, "cache": {"path": str(cache.path),
                                            "config_hash": cache.config_hash},
            "counts": counts or {}, "videos": videos}


def write_document(path: str | Path, doc: dict) -> Path:
    """Write a selection document atomically (sorted keys, UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)
    return path


def tspo_records(doc: dict) -> list[dict]:
    """TSPO's `frame_idx` form: one record per sample, the question's fields plus `frame_idx`.

    Returns:
        [{"video_id", "question_id", "question", "path", "frame_idx": [float, ...]}], in the
        document's order (TSPO stores frame numbers as floats; its wrappers sort and cut them).
    """
    out = []
    for vpath, entry in doc["videos"].items():
        for qid, q in entry["questions"].items():
            out.append({"video_id": entry["video_id"], "question_id": qid,
                        "question": q["question"], "path": vpath,
                        "frame_idx": [float(i) for i in q["frame_indices"]]})
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in a selection file")


class SelectionFile:
    """A checked selection file, indexed by video path.

    Args:
        path: the JSON file `videocfr select --selection-file` wrote.

    Raises:
        SelectionError naming the file, the entry and the fix.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise SelectionError(f"selection file {self.path} not found; write it with "
                                 f"`videocfr select --cache C --strategy S --n N "
                                 f"--selection-file {self.path}`")
        if self.path.stat().st_size > MAX_BYTES:
            raise SelectionError(f"{self.path} is larger than {MAX_BYTES} bytes; not a "
                                 f"selection file")
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"),
                             parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as err:
            raise SelectionError(f"{self.path} is not valid JSON: {err}") from err
        self.doc = self._check(doc)
        self.n = int(doc["n"])
        self.strategy: dict = doc["strategy"]
        self.config_hash: str = doc["cache"]["config_hash"]
        self.videos: dict[str, dict] = doc["videos"]
        self._by_name: dict[str, list[str]] = {}
        for vpath in self.videos:
            self._by_name.setdefault(PurePosixPath(vpath).name, []).append(vpath)

    def _fail(self, what: str) -> SelectionError:
        return SelectionError(f"{self.path}: {what}; rewrite it with `videocfr select "
                              f"--selection-file`")

    def _check(self, doc: Any) -> dict:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise self._fail(f"not a {FORMAT!r} document (format "
                             f"{doc.get('format') if isinstance(doc, dict) else None!r})")
        version = doc.get("version")
        if version != VERSION:
            raise SelectionError(f"{self.path}: selection format version {version!r}; this "
                                 f"videocfr reads version {VERSION}. Upgrade videocfr to read "
                                 f"it, or rewrite the file with this one's `videocfr select`")
        n = doc.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise self._fail(f"n must be a positive integer, got {n!r}")
        if not isinstance(doc.get("strategy"), dict):
            raise self._fail("strategy must be an object")
        cache = doc.get("cache")
        if not isinstance(cache, dict) or not isinstance(cache.get("config_hash"), str):
            raise self._fail("cache.config_hash is missing")
        videos = doc.get("videos")
        if not isinstance(videos, dict):
            raise self._fail("videos must be an object keyed by video path")
        for vpath, entry in videos.items():
            where = f"video {vpath!r}"
            if not isinstance(entry, dict) or not isinstance(entry.get("questions"), dict):
                raise self._fail(f"{where} has no questions object")
            for key, typ in (("video_id", str), ("content_hash", str), ("num_frames", int)):
                if not isinstance(entry.get(key), typ) or isinstance(entry.get(key), bool):
                    raise self._fail(f"{where}: {key} must be {typ.__name__}")
            for qid, q in entry["questions"].items():
                self._check_question(f"{where} question {qid!r}", q, n)
        return doc

    def _check_question(self, where: str, q: Any, n: int) -> None:
        if not isinstance(q, dict) or not isinstance(q.get("question"), str):
            raise self._fail(f"{where} has no question text")
        idx, ts = q.get("frame_indices"), q.get("timestamps")
        if not (isinstance(idx, list) and isinstance(ts, list) and len(idx) == len(ts) == n):
            raise self._fail(f"{where}: frame_indices and timestamps must be lists of n={n}")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx):
            raise self._fail(f"{where}: frame_indices must be non-negative integers")
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise self._fail(f"{where}: frame_indices must be strictly ascending")
        if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in ts):
            raise self._fail(f"{where}: timestamps must be finite numbers")

    def __len__(self) -> int:
        return sum(len(e["questions"]) for e in self.videos.values())

    # -- lookup ----------------------------------------------------------------------------------
    def find_video(self, harness_path: str | Path) -> str | None:
        """The stored video path that `harness_path` ends with (the longest such), or None.

        Raises:
            SelectionError: two stored paths match equally well (name the folder in the task).
        """
        parts = PurePosixPath(str(harness_path).replace("\\", "/")).parts
        candidates = self._by_name.get(parts[-1] if parts else "", [])
        matches = {}
        for vpath in candidates:
            stored = PurePosixPath(vpath.removeprefix("./")).parts
            if tuple(parts[-len(stored):]) == stored:
                matches.setdefault(len(stored), []).append(vpath)
        if matches:
            best = matches[max(matches)]
            if len(best) > 1:
                raise SelectionError(f"{self.path}: video {harness_path} matches the stored "
                                     f"paths {best} equally; give the videos distinct paths")
            return best[0]
        if len(candidates) == 1:
            return candidates[0]  # same file name under other folders: the content hash decides
        return None

    def sample(self, harness_path: str | Path, question_id: str | None = None,
               context: str = "") -> Sample:
        """The sample of a harness's (video path, question).

        The question is the entry with id `question_id` when given and stored; else the one
        whose question text occurs in `context` (the harness's prompt); a video with a single
        stored question needs neither.

        Raises:
            SelectionError: the video or the question is not in the file (the message lists
                what the file holds for that video and the fallback option).
        """
        vpath = self.find_video(harness_path)
        if vpath is None:
            raise SelectionError(f"video {harness_path} is not in selection file {self.path} "
                                 f"({len(self.videos)} videos, e.g. {sorted(self.videos)[:3]}); "
                                 f"select frames for this dataset with `videocfr select`, or "
                                 f"pass fallback=<strategy> to choose its frames another way")
        entry = self.videos[vpath]
        questions = entry["questions"]
        qid = None
        if question_id is not None and str(question_id) in questions:
            qid = str(question_id)
        elif len(questions) == 1 and question_id is None:
            qid = next(iter(questions))
        else:
            hits = [k for k, q in questions.items() if q["question"].strip()
                    and q["question"].strip() in context]
            if len(hits) == 1:
                qid = hits[0]
        if qid is None:
            raise SelectionError(
                f"{self.path}: video {vpath!r} has questions {sorted(questions)[:10]}, none is "
                f"question {question_id!r} of the harness and none's text is in its prompt; "
                f"set question_key=<the task's document field holding the question id>, or "
                f"pass fallback=<strategy>")
        q = questions[qid]
        return Sample(video_path=vpath, video_id=entry["video_id"], question_id=qid,
                      question=q["question"],
                      frame_indices=np.asarray(q["frame_indices"], np.int64),
                      timestamps=np.asarray(q["timestamps"], np.float64),
                      content_hash=entry["content_hash"], num_frames=entry["num_frames"])
