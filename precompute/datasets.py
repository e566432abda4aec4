"""Datasets: QA records grouped by video, read from the native or the Video-R1 format.

A dataset is named by `configs/datasets/<name>.yaml` (or given as a path to such a YAML)::

    annotation: ../../data/demo/annotations.jsonl   # JSON list or JSONL
    format: auto            # native | video-r1 | auto (by the first record's fields)
    video_root: ../../data/demo                      # video paths are relative to it
    sampling: {num_frames: 16}                       # optional overrides of the config's sampling
    builtin: demo           # optional: created on first use (precompute/demo.py)

Relative paths in a dataset YAML are resolved against the YAML file's own directory.

Native record: `{video_id, video, question_id, question, options?, answer, problem_type?}`.
Video-R1 / VideoCFR record: `{problem_id, problem, options, solution: "<answer>B</answer>",
problem_type, data_type, path}`; image records (`data_type: image`) are skipped and counted, and
the video id is the path without a leading "./" and without its extension.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from videocfr.cache_format.keys import is_image_record, video_id_from_path
from videocfr.vlm.answers import parse_solution
from videocfr.vlm.prompts import PROBLEM_TYPES  # the answer types the trainer's rewards score

logger = logging.getLogger(__name__)

FORMATS = ("auto", "native", "video-r1")
NATIVE_REQUIRED = ("video_id", "video", "question_id", "question", "answer")
VIDEO_R1_REQUIRED = ("problem_id", "problem", "solution", "path")
REPO_ROOT = Path(__file__).resolve().parents[1]


class DatasetError(ValueError):
    """A dataset file or record is malformed; the message names the file, record and field."""


@dataclass
class QAItem:
    """One question about a video.

    Args:
        video_id, question_id: keys in the cache.
        question: question text.
        options: answer options ("A. red"), empty for open questions.
        answer: ground truth (a letter for multiple choice).
        problem_type: Video-R1 type ("multiple choice", "numerical", "OCR", "free-form",
            "regression").
        record: 0-based position of the record in the annotation file.
    """

    video_id: str
    question_id: str
    question: str
    options: list[str]
    answer: str
    problem_type: str
    record: int


@dataclass
class VideoItem:
    """One video and its questions.

    Args:
        video_id: key of the video.
        path: the video's path as the dataset gives it (relative to the video root).
        abs_path: the resolved file path.
        questions: its questions, in file order.
    """

    video_id: str
    path: str
    abs_path: Path
    questions: list[QAItem] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.abs_path.is_file()


@dataclass
class DatasetConfig:
    """A dataset YAML (see the module docstring).

    Args:
        name: dataset name (the YAML's stem unless given).
        annotation: JSON / JSONL file of QA records.
        format: "native", "video-r1" or "auto".
        video_root: directory the records' video paths are relative to.
        sampling: overrides of the precompute config's sampling section.
        builtin: "demo" for the built-in demo dataset, created on first use.
        description: free text.
    """

    name: str
    annotation: str
    format: str = "auto"
    video_root: str = "."
    sampling: dict[str, Any] = field(default_factory=dict)
    builtin: str | None = None
    description: str = ""

    def __post_init__(self):
        if self.format not in FORMATS:
            raise DatasetError(f"dataset {self.name!r}: format {self.format!r} unknown; use one "
                               f"of {FORMATS}")
        if not isinstance(self.sampling, dict):
            raise DatasetError(f"dataset {self.name!r}: sampling must be a mapping of overrides")
        if self.builtin not in (None, "demo"):
            raise DatasetError(f"dataset {self.name!r}: builtin {self.builtin!r} unknown; only "
                               f"'demo' exists")


@dataclass
class Dataset:
    """A loaded dataset.

    Args:
        config: its YAML config.
        videos: videos sorted by video_id, each with its questions.
        num_records: records read from the annotation file.
        skipped_images: image records skipped (Video-R1 `data_type: image`).
    """

    config: DatasetConfig
    videos: list[VideoItem]
    num_records: int
    skipped_images: int = 0

    @property
    def num_questions(self) -> int:
        return sum(len(v.questions) for v in self.videos)

    def missing_videos(self) -> list[VideoItem]:
        """Videos whose file does not exist (they become failed records)."""
        return [v for v in self.videos if not v.exists]

    def describe(self) -> dict:
        """What the cache records about the dataset (JSON data)."""
        return {"name": self.config.name, "format": self.config.format,
                "num_videos": len(self.videos), "num_questions": self.num_questions,
                "skipped_images": self.skipped_images}


def read_records(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON list or a JSONL file.

    Raises:
        DatasetError: unreadable JSON (with the line number for JSONL) or a non-object record.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file {path} not found; check the dataset YAML's "
                           f"'annotation'")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: invalid JSON: {err}") from None
    else:
        records = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path} line {line_no}: invalid JSON: {err}") from None
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DatasetError(f"{path}: record {i} (0-based) is a {type(rec).__name__}, "
                               f"expected a JSON object")
    return records


def detect_format(records: list[dict]) -> str:
    """"video-r1" when the first record has `problem` and `path`, else "native"."""
    if records and "problem" in records[0] and "path" in records[0]:
        return "video-r1"
    return "native"


def _require(rec: dict, names: tuple[str, ...], i: int, path: Path, fmt: str) -> None:
    for name in names:
        if rec.get(name) is None:
            raise DatasetError(f"{path}: record {i} (0-based) has no field {name!r}; the {fmt} "
                               f"format needs {list(names)}")


def _options(value: Any, i: int, path: Path) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DatasetError(f"{path}: record {i} (0-based): 'options' must be a list of strings, "
                           f"got {type(value).__name__}")
    return [str(o) for o in value]


def parse_records(records: list[dict], fmt: str, path: Path
                  ) -> tuple[list[tuple[str, QAItem]], int]:
    """QA items from records.

    Args:
        records: the annotation file's records.
        fmt: "native" or "video-r1".
        path: the annotation file (for messages).

    Returns:
        ([(video path as given, item)], number of skipped image records).
    """
    out: list[tuple[str, QAItem]] = []
    skipped = 0
    invalid: list[str] = []
    for i, rec in enumerate(records):
        if fmt == "video-r1" and is_image_record(rec):
            skipped += 1
            continue
        problem = _answer_problem(rec, fmt)
        if problem is not None:
            name = rec.get("problem_id" if fmt == "video-r1" else "question_id")
            invalid.append(f"record {i} (0-based) has {problem} [id {name!r}]")
            continue
        if fmt == "video-r1":
            _require(rec, VIDEO_R1_REQUIRED, i, path, "Video-R1")
            video = str(rec["path"])
            options = _options(rec.get("options"), i, path)
            item = QAItem(video_id=video_id_from_path(video), question_id=str(rec["problem_id"]),
                          question=str(rec["problem"]), options=options,
                          answer=parse_solution(str(rec["solution"])),
                          problem_type=str(rec.get("problem_type") or _default_type(options)),
                          record=i)
        else:
            _require(rec, NATIVE_REQUIRED, i, path, "native")
            video = str(rec["video"])
            options = _options(rec.get("options"), i, path)
            item = QAItem(video_id=str(rec["video_id"]), question_id=str(rec["question_id"]),
                          question=str(rec["question"]), options=options,
                          answer=str(rec["answer"]),
                          problem_type=str(rec.get("problem_type") or _default_type(options)),
                          record=i)
        if not item.video_id or not item.question_id:
            raise DatasetError(f"{path}: record {i} (0-based) has an empty video or question id")
        out.append((video, item))
    if invalid:
        shown = "; ".join(invalid[:5]) + (f"; and {len(invalid) - 5} more" if len(invalid) > 5
                                          else "")
        raise DatasetError(f"{path}: {len(invalid)} of {len(records)} records cannot be trained "
                           f"on: {shown}. problem_type must be one of {list(PROBLEM_TYPES)} (or "
                           f"absent), and the solution/answer non-empty")
    return out, skipped


def _answer_problem(rec: dict, fmt: str) -> str | None:
    """Why a record's problem_type or answer is unusable, or None (missing fields are left to
    `_require`, except an absent answer, which is counted here)."""
    ptype = rec.get("problem_type")
    if ptype not in (None, "") and (not isinstance(ptype, str) or ptype not in PROBLEM_TYPES):
        return f"an unknown problem_type {ptype!r}"
    key = "solution" if fmt == "video-r1" else "answer"
    if key not in rec or rec[key] is None:
        return f"no field {key!r}"
    if not parse_solution(str(rec[key])).strip():
        return f"an empty {key!r} ({rec[key]!r})"
    return None


def _default_type(options: list[str]) -> str:
    return "multiple choice" if options else "free-form"


def group_by_video(items: list[tuple[str, QAItem]], video_root: Path, path: Path
                   ) -> list[VideoItem]:
    """Videos sorted by id, each with its questions in file order.

    Raises:
        DatasetError: one video id with two paths, or a question id twice for one video.
    """
    videos: dict[str, VideoItem] = {}
    seen: dict[tuple[str, str], int] = {}
    for video_path, item in items:
        video = videos.get(item.video_id)
        if video is None:
            video = videos[item.video_id] = VideoItem(item.video_id, video_path,
                                                      video_root / video_path)
        elif video.path != video_path:
            raise DatasetError(f"{path}: record {item.record} (0-based) gives video "
                               f"{item.video_id!r} the path {video_path!r}, an earlier record "
                               f"gave {video.path!r}; one id, one file")
        key = (item.video_id, item.question_id)
        if key in seen:
            raise DatasetError(f"{path}: records {seen[key]} and {item.record} (0-based) both are "
                               f"question {item.question_id!r} of video {item.video_id!r}; "
                               f"question ids must be unique within a video")
        seen[key] = item.record
        video.questions.append(item)
    return [videos[k] for k in sorted(videos)]


def resolve_dataset_yaml(name_or_path: str, search: list[Path] | None = None) -> Path:
    """The YAML of `--dataset NAME|PATH`.

    A value ending in .yaml/.yml or naming an existing file is a path; otherwise
    `configs/datasets/<name>.yaml` is looked up under the working directory, then the repo root.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise DatasetError(f"dataset config {candidate} not found")
        return candidate
    dirs = search or [Path.cwd() / "configs" / "datasets", REPO_ROOT / "configs" / "datasets"]
    for d in dirs:
        if (d / f"{name_or_path}.yaml").is_file():
            return d / f"{name_or_path}.yaml"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise DatasetError(f"dataset {name_or_path!r} not found in {[str(d) for d in dirs]}; "
                       f"available: {known}, or give a path to a dataset YAML")


def load_dataset_config(name_or_path: str) -> DatasetConfig:
    """Read a dataset YAML; relative paths resolve against its directory; unknown keys fail."""
    yaml_path = resolve_dataset_yaml(name_or_path)
    with open(yaml_path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise DatasetError(f"{yaml_path}: a dataset YAML is a mapping")
    known = [f for f in DatasetConfig.__dataclass_fields__]
    for key in data:
        if key not in known:
            raise DatasetError(f"{yaml_path}: unknown key {key!r}; known keys: {known}")
    if "annotation" not in data:
        raise DatasetError(f"{yaml_path}: missing key 'annotation' (the JSON/JSONL QA file)")
    data.setdefault("name", yaml_path.stem)
    base = yaml_path.resolve().parent
    data["annotation"] = str((base / os.path.expanduser(data["annotation"])).resolve())
    data["video_root"] = str((base / os.path.expanduser(data.get("video_root", "."))).resolve())
    return DatasetConfig(**data)


def load_dataset(config: DatasetConfig | str, allow_empty: bool = False) -> Dataset:
    """Load a dataset: read its records, group them by video, report missing video files.

    Args:
        config: a DatasetConfig, or a name / YAML path as `--dataset` takes it.
        allow_empty: accept an annotation file with no video question (else DatasetError).

    Returns:
        Dataset with videos sorted by id. Missing video files are logged by name here and
        become failed records in the cache (they do not stop the run).
    """
    if isinstance(config, str):
        config = load_dataset_config(config)
    if config.builtin == "demo":
        from .demo import ensure_demo

        ensure_demo(Path(config.video_root), Path(config.annotation))
    path = Path(config.annotation)
    records = read_records(path)
    fmt = config.format if config.format != "auto" else detect_format(records)
    items, skipped = parse_records(records, fmt, path)
    if not items and not allow_empty:
        raise DatasetError(f"{path}: no video questions ({len(records)} records, {skipped} "
                           f"image records skipped); an empty annotation file is usually a "
                           f"failed download: fetch it again (--allow-empty builds an empty "
                           f"cache anyway)")
    videos = group_by_video(items, Path(config.video_root), path)
    config.format = fmt
    dataset = Dataset(config=config, videos=videos, num_records=len(records),
                      skipped_images=skipped)
    if skipped:
        logger.info("dataset %s: skipped %d image records", config.name, skipped)
    missing = dataset.missing_videos()
    if missing:
        names = ", ".join(v.path for v in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        logger.warning("dataset %s: %d video files not found under %s (they become failed "
                       "records): %s%s", config.name, len(missing), config.video_root, names, more)
    logger.info("dataset %s: %d records, %d videos, %d questions (%s format)", config.name,
                len(records), len(videos), dataset.num_questions, fmt)
    return dataset
