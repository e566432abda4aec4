"""How dataset records map to cache keys (shared by precompute's adapters and cache tools).

A Video-R1 / VideoCFR record `{problem_id, path, ...}` is keyed in a cache by
(`video_id_from_path(path)`, `str(problem_id)`); `videocfr cache export` maps records back the
same way.
"""

from __future__ import annotations

from pathlib import PurePosixPath


def video_id_from_path(path: str) -> str:
    """Video-R1 path -> video id: forward slashes, no leading "./", no extension."""
    p = str(path).replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return str(PurePosixPath(p).with_suffix(""))


def video_r1_key(record: dict) -> tuple[str, str]:
    """(video_id, question_id) of a Video-R1 record, as precompute keys it."""
    return video_id_from_path(str(record["path"])), str(record["problem_id"])


def is_image_record(record: dict) -> bool:
    """Video-R1 image records (`data_type: image`) have no video and no prior."""
    return str(record.get("data_type", "video")).lower() == "image"
