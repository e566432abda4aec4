"""Reading a cache: `Cache` for records, `PriorTable` for O(1) prior lookup in RAM."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

from . import schema
from .fusion import QFRAME_ARRAYS
from .manifest import load_manifest, safe_member_path
from .records import QuestionRecord, VideoRecord
from .sandbox import open_checked
from .storage import as_path
from .structure import StructureError, check_ids

Key = tuple[str, str]


def _close(word: str, candidates: Iterable[str], limit: int = 50_000) -> list[str]:
    pool = []
    for i, c in enumerate(candidates):
        if i >= limit:
            break
        pool.append(c)
    return difflib.get_close_matches(word, pool, n=3, cutoff=0.6)


def missing_key_error(video_id: str, question_id: str | None, video_questions: dict,
                      failed: dict[str, str]) -> KeyError:
    """A KeyError that names the key, why it is absent, and close existing keys."""
    if video_id in failed:
        return KeyError(f"video {video_id!r} failed in precompute ({failed[video_id]}); it has "
                        f"no frames and no priors")
    if video_id not in video_questions:
        hint = _close(video_id, video_questions)
        return KeyError(f"video {video_id!r} is not in the cache; close video ids: {hint}")
    qids = video_questions[video_id]
    hint = _close(question_id, qids) or qids[:3]
    return KeyError(f"question {question_id!r} of video {video_id!r} is not in the cache; "
                    f"questions of that video: {hint}")


class Cache:
    """A finished cache directory, read lazily.

    Args:
        path: the cache directory (holding manifest.json and shards/).
        expect_config_hash: if given, the cache's config hash must equal it.

    h5py files are opened on first use in each process, so a Cache may be handed to DataLoader
    workers (it pickles without open handles).
    """

    def __init__(self, path: str | Path, expect_config_hash: str | None = None):
        self.path = as_path(path)  # a local Path, or a RemotePath for fsspec URLs
        self.manifest = load_manifest(self.path)
        schema.check_config_hash(self.manifest["config_hash"], expect_config_hash, str(self.path))
        self._shards = [safe_member_path(self.path, s["path"]) for s in self.manifest["shards"]]
        for shard in self._shards:
            if not shard.is_file():
                raise schema.CacheError(f"shard {shard} named by the manifest is missing")
        self._pid: int | None = None
        self._files: dict[int, h5py.File] = {}
        self._videos: dict[str, tuple[int, int]] | None = None
        self._questions: dict[Key, tuple[int, int]] = {}
        self._by_video: dict[str, list[str]] = {}
        self._failed: dict[str, str] = {}

    # -- properties ---------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def video_root(self) -> str | None:
        """Where precompute found the videos (the manifest's `video_root`), or None."""
        return self.manifest.get("video_root")

    @property
    def config_hash(self) -> str:
        return self.manifest["config_hash"]

    @property
    def embed_dim(self) -> int:
        return self.manifest["embed_dim"]

    @property
    def shard_paths(self) -> list[Path]:
        return list(self._shards)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, None
        return state

    def __len__(self) -> int:
        return len(self._index()[1])

    # -- files and index ----------------------------------------------------------------------
    def file(self, i: int) -> h5py.File:
        """Shard i, checked in a child process (once per sha256, cache_format/sandbox.py) and
        then opened read-only, without file locking, once per process."""
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(i)
        if f is None:
            self.open_all([i])
            f = self._files[i]
        return f

    def open_all(self, indices: Iterable[int] | None = None) -> None:
        """Check (in parallel child processes) and open the shards `indices` (default: all).

        Raises:
            StructureError (kinds of structure.KINDS, hang / crash / memory included) or
            SchemaError naming the first bad shard; the other shards stay closed.
        """
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        todo = [i for i in (range(len(self._shards)) if indices is None else indices)
                if i not in self._files]
        if not todo:
            return
        files = open_checked([self._shards[i] for i in todo],
                             [str(self._shards[i]) for i in todo],
                             self.config_hash, self.embed_dim)
        self._files.update(zip(todo, files))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def _index(self) -> tuple[dict[str, tuple[int, int]], dict[Key, tuple[int, int]]]:
        if self._videos is None:
            self.open_all()
            videos: dict[str, tuple[int, int]] = {}
            for i in range(len(self._shards)):
                f = self.file(i)
                where = str(self._shards[i])
                vids = f["videos/video_id"].asstr()[()]
                check_ids(vids, "videos/video_id", where)
                status = f["videos/status"].asstr()[()]
                for row, (vid, st) in enumerate(zip(vids, status)):
                    if vid in videos:
                        raise StructureError(where, "duplicate-key", f"videos/video_id[{row}]",
                                             f"video {vid!r} appears twice in the cache")
                    videos[vid] = (i, row)
                    self._by_video.setdefault(vid, [])
                    if st != "ok":
                        self._failed[vid] = str(f["videos/error"].asstr()[row])
                aliases = f["aliases/video_id"].asstr()[()]
                check_ids(aliases, "aliases/video_id", where)
                for j, (alias, row) in enumerate(zip(aliases, f["aliases/video_row"][()])):
                    if alias in videos:
                        raise StructureError(where, "duplicate-key", f"aliases/video_id[{j}]",
                                             f"alias {alias!r} is already a video id")
                    videos[alias] = (i, int(row))
                    self._by_video.setdefault(alias, [])
                qv = f["questions/video_id"].asstr()[()]
                qq = f["questions/question_id"].asstr()[()]
                check_ids(qq, "questions/question_id", where)
                for row, key in enumerate(zip(qv, qq)):
                    if key[0] not in self._by_video:
                        raise StructureError(where, "row-pointer", f"questions/video_id[{row}]",
                                             f"names video {key[0]!r}, which the cache lacks")
                    if key in self._questions:
                        raise StructureError(where, "duplicate-key",
                                             f"questions/question_id[{row}]",
                                             f"question {key!r} appears twice in the cache")
                    self._questions[key] = (i, row)
                    self._by_video[key[0]].append(key[1])
            self._videos = videos
        return self._videos, self._questions

    # -- lookups ------------------------------------------------------------------------------
    def video_ids(self) -> list[str]:
        return list(self._index()[0])

    def keys(self) -> Iterator[Key]:
        """All (video_id, question_id) pairs that have a prior."""
        return iter(self._index()[1])

    def question_ids(self, video_id: str) -> list[str]:
        self._video_loc(video_id)
        return list(self._by_video[video_id])

    def _video_loc(self, video_id: str) -> tuple[int, int]:
        videos, _ = self._index()
        if video_id not in videos:
            raise missing_key_error(video_id, None, self._by_video, {})
        return videos[video_id]

    def _question_loc(self, video_id: str, question_id: str) -> tuple[int, int]:
        _, questions = self._index()
        loc = questions.get((video_id, question_id))
        if loc is None:
            raise missing_key_error(video_id, question_id, self._by_video, self._failed)
        return loc

    def video(self, video_id: str) -> VideoRecord:
        """The record of one video (a failed one has no frames, only its error)."""
        i, row = self._video_loc(video_id)
        f = self.file(i)
        s = lambda name: str(f[f"videos/{name}"].asstr()[row])  # noqa: E731
        a, b = (int(x) for x in f["videos/frame_offset"][row:row + 2])
        sa, sb = (int(x) for x in f["videos/scene_offset"][row:row + 2])
        return VideoRecord(
            video_id=s("video_id"), path=s("path"), content_hash=s("content_hash"),
            status=s("status"), error=s("error"), fps=float(f["videos/fps"][row]),
            duration=float(f["videos/duration"][row]),
            num_frames=int(f["videos/num_frames"][row]),
            frame_indices=f["frames/index"][a:b], timestamps=f["frames/timestamp"][a:b],
            scenes=f["scenes/bounds"][sa:sb], frame_scene=f["frames/scene"][a:b],
            scene_rep=f["frames/scene_rep"][a:b], embeddings=f["frames/embedding"][a:b])

    def question(self, video_id: str, question_id: str) -> QuestionRecord:
        """The record of one question: text, answer, text embedding, saliences and prior."""
        i, row = self._question_loc(video_id, question_id)
        f = self.file(i)
        s = lambda name: str(f[f"questions/{name}"].asstr()[row])  # noqa: E731
        a, b = (int(x) for x in f["questions/frame_offset"][row:row + 2])
        q = {name: f[f"qframes/{name}"][a:b] for name in QFRAME_ARRAYS}
        return QuestionRecord(
            video_id=video_id, question_id=question_id, question=s("question"),
            options=json.loads(s("options")), answer=s("answer"),
            problem_type=s("problem_type"),
            text_embedding=f["questions/text_embedding"][row], **q)

    def prior(self, video_id: str, question_id: str) -> np.ndarray:
        """float32 [K] consensus prior of one question."""
        i, row = self._question_loc(video_id, question_id)
        f = self.file(i)
        a, b = (int(x) for x in f["questions/frame_offset"][row:row + 2])
        return f["qframes/prior"][a:b]

    def saliences(self, video_id: str, question_id: str) -> dict[str, np.ndarray]:
        """{name: float32 [K]} of the stored sources (fusion.SALIENCES: uniform, scene,
        semantic)."""
        return self.question(video_id, question_id).saliences()
