"""Schema constants of cache format v2, the config hash, and the errors readers raise.

The layout is documented in docs/cache-format.md; this module is its single source in code.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from .fusion import QFRAME_ARRAYS

FORMAT_NAME = "videocfr-cache"
SCHEMA_VERSION = 2  # v2: every shard carries `values_sha256`, a digest of all its values
# Versions this reader reads. A version-1 shard has no values digest: its strings and small
# tables carry no checksum (docs/cache-format.md, "Versioning").
READ_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"

# Datasets of one shard: name -> (dtype, trailing shape). "D" is the embedding dim; a leading
# dimension is the row count of its table. Ragged per-frame data is flattened with offsets.
STR = "str"
SHARD_DATASETS: dict[str, tuple[str, tuple]] = {
    # one row per video
    "videos/video_id": (STR, ()),
    "videos/path": (STR, ()),
    "videos/content_hash": (STR, ()),
    "videos/status": (STR, ()),
    "videos/error": (STR, ()),
    "videos/fps": ("float64", ()),
    "videos/duration": ("float64", ()),
    "videos/num_frames": ("int64", ()),
    "videos/frame_offset": ("int64", ()),  # [V + 1] into frames/*
    "videos/scene_offset": ("int64", ()),  # [V + 1] into scenes/*
    # one row per sampled frame, all videos of the shard concatenated
    "frames/index": ("int64", ()),
    "frames/timestamp": ("float64", ()),
    "frames/scene": ("int32", ()),
    "frames/scene_rep": ("bool", ()),
    "frames/embedding": ("float16", ("D",)),
    # one row per scene
    "scenes/bounds": ("int64", (2,)),
    # one row per question
    "questions/video_id": (STR, ()),
    "questions/question_id": (STR, ()),
    "questions/video_row": ("int64", ()),
    "questions/question": (STR, ()),
    "questions/options": (STR, ()),  # JSON list of strings
    "questions/answer": (STR, ()),
    "questions/problem_type": (STR, ()),
    "questions/text_embedding": ("float16", ("D",)),
    "questions/frame_offset": ("int64", ()),  # [Q + 1] into qframes/*
    # one row per (question, sampled frame)
    **{f"qframes/{name}": ("float32", ()) for name in QFRAME_ARRAYS},
    # alternative ids of a video row (filled by `cache merge` for videos of equal content)
    "aliases/video_id": (STR, ()),
    "aliases/video_row": ("int64", ()),
}
# Datasets large enough to be chunked with fletcher32 checksums.
CHECKSUMMED = ("frames/embedding", "questions/text_embedding",
               *(f"qframes/{name}" for name in QFRAME_ARRAYS))
SHARD_ATTRS = ("format", "schema_version", "config_hash", "embed_dim", "job_index", "num_jobs",
               "part")


class CacheError(Exception):
    """A cache is missing, incomplete, or does not match what the caller expects."""


class SchemaError(CacheError):
    """A shard or manifest does not follow the schema (wrong dtype, shape, value or field)."""


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def config_hash(config: dict) -> str:
    """sha256 (hex) of the canonical JSON of a config; rejects NaN/inf and non-JSON values."""
    try:
        text = canonical_json(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config must be plain JSON data (dict/list/str/number/bool/None): "
                         f"{err}") from err
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_finite_config(config: Any, where: str = "config") -> None:
    """Raise ValueError naming the first NaN/inf value of a config."""
    if isinstance(config, float) and not math.isfinite(config):
        raise ValueError(f"{where} is {config}; configs must be finite")
    if isinstance(config, dict):
        for k, v in config.items():
            check_finite_config(v, f"{where}.{k}")
    elif isinstance(config, list | tuple):
        for i, v in enumerate(config):
            check_finite_config(v, f"{where}[{i}]")


def check_version(found: Any, where: str) -> None:
    if isinstance(found, bool) or found not in READ_VERSIONS:
        raise SchemaError(f"{where}: schema version {found!r} found, this reader reads versions "
                          f"{', '.join(map(str, READ_VERSIONS))}; rebuild the cache (`videocfr "
                          f"precompute`) or install a matching videocfr")


def check_config_hash(found: str, expected: str | None, where: str) -> None:
    if expected is not None and found != expected:
        raise CacheError(f"{where}: config hash {found} found, expected {expected}; the cache was "
                         f"built with another precompute config")
