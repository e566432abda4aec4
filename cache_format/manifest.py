"""Loading and checking manifest.json and the structure of shard files (untrusted input)."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from . import schema
from .schema import CacheError, SchemaError
from .storage import as_path

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_FIELDS = {
    "format": str, "schema_version": int, "config": dict, "config_hash": str, "embed_dim": int,
    "model": dict, "library_versions": dict, "num_jobs": int, "shards": list, "counts": dict,
    "failures": list,
}
MAX_MANIFEST_BYTES = 256 << 20
_SHARD_FIELDS = {"path": str, "sha256": str, "bytes": int, "videos": int, "failed_videos": int,
                 "questions": int}


def safe_member_path(cache_dir: Path, rel: str) -> Path:
    """Resolve a path named by a manifest, refusing anything outside the cache directory.

    Raises:
        SchemaError: absolute paths, `..`, backslashes, or links that lead outside.
    """
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise SchemaError(f"manifest names an invalid shard path {rel!r}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or pure.parts[0] != schema.SHARD_DIR:
        raise SchemaError(f"manifest shard path {rel!r} must be relative and inside "
                          f"{schema.SHARD_DIR}/ of the cache")
    root = cache_dir.resolve()
    full = (root / pure).resolve()
    if not full.is_relative_to(root):
        raise SchemaError(f"manifest shard path {rel!r} leads outside the cache ({full})")
    return full


def read_untrusted_json(path, cache_dir, what: str, max_bytes: int = MAX_MANIFEST_BYTES):
    """Parse a JSON file of a cache from another team (manifest.json, addition.json).

    Args:
        path: the file (a local Path or a RemotePath).
        cache_dir: the cache it belongs to; a local file must resolve inside it.
        what: what the file should be, for the messages ("a manifest").
        max_bytes: larger files are refused before they are read.

    Returns:
        The parsed JSON value (the caller checks its fields).

    Raises:
        SchemaError: a link that leads outside the cache, an oversized file, invalid UTF-8 or
            JSON, or NaN / Infinity constants (not JSON, and not a valid value anywhere here).
    """
    if isinstance(path, Path) and not path.resolve().is_relative_to(cache_dir.resolve()):
        raise SchemaError(f"{path} is a link that leads outside the cache "
                          f"({path.resolve()}); a reader never follows it")
    if path.stat().st_size > max_bytes:
        raise SchemaError(f"{path} is larger than {max_bytes} bytes; not {what}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f, parse_constant=_reject_constant)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise SchemaError(f"{path} is not valid JSON: {err}") from err


def load_manifest(cache_dir: str | Path) -> dict:
    """Read and check manifest.json of a cache directory.

    Raises:
        CacheError: no manifest (the cache is incomplete or not a cache).
        SchemaError: malformed JSON, missing or mistyped fields, a config hash that does not
            match the config, or shard paths outside the cache.
    """
    cache_dir = as_path(cache_dir)  # a local Path, or a RemotePath for fsspec URLs
    path = cache_dir / schema.MANIFEST_NAME
    if not cache_dir.is_dir():
        raise CacheError(f"cache directory {cache_dir} does not exist")
    if not path.is_file():
        raise CacheError(f"{path} is missing: the cache is unfinished (finish the precompute "
                         f"jobs, then `videocfr precompute ... --finalize`) or not a cache")
    manifest = read_untrusted_json(path, cache_dir, "a manifest")
    if not isinstance(manifest, dict):
        raise SchemaError(f"{path} must hold a JSON object")
    for key, typ in _MANIFEST_FIELDS.items():
        if key not in manifest:
            raise SchemaError(f"{path}: field {key!r} is missing")
        if not isinstance(manifest[key], typ) or isinstance(manifest[key], bool):
            raise SchemaError(f"{path}: field {key!r} must be {typ.__name__}, got "
                              f"{type(manifest[key]).__name__}")
    if "video_root" in manifest and not isinstance(manifest["video_root"], str):
        raise SchemaError(f"{path}: field 'video_root' must be str, got "
                          f"{type(manifest['video_root']).__name__}")
    if manifest["format"] != schema.FORMAT_NAME:
        raise SchemaError(f"{path}: format {manifest['format']!r} is not {schema.FORMAT_NAME!r}")
    schema.check_version(manifest["schema_version"], str(path))
    if schema.config_hash(manifest["config"]) != manifest["config_hash"]:
        raise SchemaError(f"{path}: config_hash {manifest['config_hash']} does not match the "
                          f"config it records ({schema.config_hash(manifest['config'])})")
    model = manifest["model"]
    if not all(isinstance(model.get(k), str) for k in ("name", "pretrained")):
        raise SchemaError(f"{path}: model must give strings 'name' and 'pretrained'")
    if manifest["embed_dim"] <= 0:
        raise SchemaError(f"{path}: embed_dim must be positive")
    seen = set()
    for i, shard in enumerate(manifest["shards"]):
        where = f"{path}: shards[{i}]"
        if not isinstance(shard, dict):
            raise SchemaError(f"{where} must be an object")
        for key, typ in _SHARD_FIELDS.items():
            if not isinstance(shard.get(key), typ) or isinstance(shard.get(key), bool):
                raise SchemaError(f"{where}: field {key!r} must be {typ.__name__}")
        if not _HEX64.match(shard["sha256"]):
            raise SchemaError(f"{where}: sha256 must be 64 lowercase hex digits")
        if shard["path"] in seen:
            raise SchemaError(f"{where}: shard {shard['path']} listed twice")
        seen.add(shard["path"])
        safe_member_path(cache_dir, shard["path"])
    return manifest


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in a cache's JSON")
