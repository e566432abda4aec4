"""The structural check every reader runs on a shard before reading any of its values.

A cache may come from another team: every byte of it is untrusted. HDF5 can make a reader open
other files (external links, virtual datasets, external raw storage), run arbitrary filters
(a "compression bomb" declares gigabytes behind a few bytes of gzip), or allocate without limit
(enormous declared shapes or chunks). This module accepts exactly what `ShardWriter` writes and
refuses everything else, reading only metadata plus the small offset and row-pointer arrays:

- the file holds exactly the schema's groups and datasets (schema.SHARD_DATASETS), each reached by
  a hard link; no soft, external or user-defined links, no extra objects, no dataset reachable
  under two names;
- every dataset is contiguous, compact or chunked storage inside the file: no virtual dataset,
  no external raw storage, no filter but fletcher32 (the writer's checksum);
- dtypes and trailing shapes are the schema's; the declared bytes of each dataset and of each
  chunk are bounded by the file's own size (nothing compressed, so a real shard holds them);
- every byte of data is stored inside the file: every chunk of a chunked dataset (none reads
  as fill values), each with its filters applied (its checksum checked), and all the bytes of a
  contiguous one;
- offsets start at 0, never decrease and end at their table's length; row pointers
  (questions/video_row, aliases/video_row) point inside the videos table;
- a version-2 shard carries its values digest (`values_sha256`, cache_format/digest.py), which
  the check child compares with the values it reads (kind "checksum").

Each refusal is a `StructureError` whose `kind` names the case (docs/cache-format.md lists them)
and whose `path` names the object. Readers never run this check on unchecked bytes in their own
process: cache_format/sandbox.py runs it in a child first (kinds "hang", "crash" and "memory"
are that child timing out, dying by a signal or running out of memory).
"""

from __future__ import annotations

import re

import h5py
import numpy as np

from . import schema
from .digest import DIGEST_ATTR, HEX64
from .schema import SchemaError

GROUPS = sorted({name.split("/")[0] for name in schema.SHARD_DATASETS})
ALLOWED_FILTERS = {h5py.h5z.FILTER_FLETCHER32}
MAX_CHUNK_BYTES = 1 << 20  # the writer's chunks are <= 256 KiB, or one row
MAX_ID_CHARS = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
VLEN_ITEM_BYTES = 16  # a variable-length string element: a global-heap reference

# The error kinds (stable names, also used by `cache verify`).
KINDS = ("missing", "extra-object", "soft-link", "external-link", "user-link", "not-a-dataset",
         "shared-object", "virtual-dataset", "external-storage", "filter", "layout", "dtype",
         "shape", "size", "chunk", "offsets", "row-pointer", "attribute", "bad-id",
         "duplicate-key", "unstored", "checksum", "hang", "crash", "memory")

_LINK_KINDS = {h5py.h5l.TYPE_SOFT: "soft-link", h5py.h5l.TYPE_EXTERNAL: "external-link"}


class StructureError(SchemaError):
    """A shard's structure is outside the schema.

    Attributes:
        where: the shard (or "cache").
        kind: one of KINDS.
        path: the HDF5 object (or attribute) at fault.
    """

    def __init__(self, where: str, kind: str, path: str, detail: str):
        assert kind in KINDS, kind
        self.where, self.kind, self.path, self.detail = where, kind, path, detail
        super().__init__(f"{where}: [{kind}] {path}: {detail}")


def _links(group: h5py.Group, prefix: str, where: str) -> list[str]:
    """Names linked from `group`, each checked to be a hard link (links are not followed)."""
    names = list(group.keys())  # H5Literate: lists link names without resolving them
    for name in names:
        info = group.id.links.get_info(name.encode())
        if info.type != h5py.h5l.TYPE_HARD:
            kind = _LINK_KINDS.get(info.type, "user-link")
            raise StructureError(where, kind, f"{prefix}{name}",
                                 "only hard links are allowed; this link would make a reader "
                                 "look elsewhere (another object or another file)")
    return names


def _storage(ds: h5py.Dataset, name: str, where: str, file_bytes: int) -> None:
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise StructureError(where, "virtual-dataset", name,
                             "virtual datasets map data from other files; not allowed")
    if dcpl.get_external_count():
        raise StructureError(where, "external-storage", name,
                             "raw data stored in an external file; not allowed")
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        raise StructureError(where, "layout", name, f"storage layout {layout} is not allowed")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            raise StructureError(where, "filter", name,
                                 f"HDF5 filter {code} is not allowed (only fletcher32): a "
                                 f"compressed dataset can expand without bound when read")
    item = VLEN_ITEM_BYTES if ds.dtype.kind == "O" else ds.dtype.itemsize
    declared = int(np.prod(ds.shape, dtype=np.float64)) * item
    if declared > file_bytes:
        raise StructureError(where, "size", name,
                             f"declares {declared:.3g} bytes of data in a {file_bytes}-byte file")
    if layout == h5py.h5d.CHUNKED:
        chunk = dcpl.get_chunk()
        row = item * int(np.prod(ds.shape[1:], dtype=np.float64))
        chunk_bytes = int(np.prod(chunk, dtype=np.float64)) * item
        if chunk_bytes > max(MAX_CHUNK_BYTES, row):
            raise StructureError(where, "chunk", name,
                                 f"chunks of {chunk_bytes:.3g} bytes exceed {MAX_CHUNK_BYTES}")


def _stored(ds: h5py.Dataset, name: str, where: str, file_bytes: int) -> None:
    """Every byte of data stored inside the file: every chunk of a chunked dataset with its
    filters (the checksum) applied, all the bytes of a contiguous one. Unstored data reads as
    fill values, not as an error; a masked filter is not verified."""
    layout = ds.id.get_create_plist().get_layout()
    item = VLEN_ITEM_BYTES if ds.dtype.kind == "O" else ds.dtype.itemsize
    declared = int(np.prod(ds.shape, dtype=np.float64)) * item
    if layout == h5py.h5d.CONTIGUOUS and declared:
        offset, stored = ds.id.get_offset(), ds.id.get_storage_size()
        if not offset or stored != declared or offset + stored > file_bytes:
            raise StructureError(where, "unstored", name,
                                 f"{stored} of its {declared} bytes are stored inside the file "
                                 f"(unstored data reads as fill values, not as an error)")
    if layout != h5py.h5d.CHUNKED:
        return
    chunk = ds.id.get_create_plist().get_chunk()
    expected = int(np.prod([-(-n // c) for n, c in zip(ds.shape, chunk)], dtype=np.int64))
    stored = ds.id.get_num_chunks()
    if stored != expected:
        raise StructureError(where, "unstored", name,
                             f"{stored} of its {expected} chunks are stored (an unstored chunk "
                             f"reads as fill values, not as an error)")
    for i in range(stored):
        info = ds.id.get_chunk_info(i)
        if info.filter_mask:
            raise StructureError(where, "filter", name, f"chunk {i} skips its filters "
                                 f"(mask {info.filter_mask}): its checksum would not be checked")
        if not info.byte_offset or info.byte_offset + info.size > file_bytes:  # 0: undefined
            raise StructureError(where, "unstored", name, f"chunk {i} has no address inside "
                                 f"the file ({info.byte_offset}): it would read as fill values")


def _dtype_ok(ds: h5py.Dataset, want: str) -> bool:
    if want == schema.STR:
        info = h5py.check_string_dtype(ds.dtype)
        return info is not None and info.length is None
    return ds.dtype == np.dtype(want)


def _attr_str(f: h5py.File, key: str, where: str) -> str:
    value = f.attrs[key]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str | np.str_):
        raise StructureError(where, "attribute", f"/@{key}", f"must be a string, got {value!r}")
    return str(value)


def _attr_int(f: h5py.File, key: str, where: str) -> int:
    value = f.attrs[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_):
        raise StructureError(where, "attribute", f"/@{key}", f"must be an integer, got {value!r}")
    return int(value)


_STR_ATTRS = ("format", "config_hash")


def shard_attrs(f: h5py.File, where: str) -> dict[str, str | int]:
    """The shard attributes schema.SHARD_ATTRS, typed (str or int), as the values digest sees
    them. Raises StructureError (kind "attribute") for one missing or mistyped."""
    for key in schema.SHARD_ATTRS:
        if key not in f.attrs:
            raise StructureError(where, "attribute", f"/@{key}", "attribute is missing")
    return {key: _attr_str(f, key, where) if key in _STR_ATTRS else _attr_int(f, key, where)
            for key in schema.SHARD_ATTRS}


def stored_digest(f: h5py.File, version: int, where: str) -> str | None:
    """The shard's `values_sha256` (version >= 2; None for a version-1 shard, which has none).

    A version-2 shard without one, or a version-1 shard with one (its version number was
    changed), is refused: the digest is never silently skipped."""
    has = DIGEST_ATTR in f.attrs
    if version < 2:
        if has:
            raise StructureError(where, "attribute", f"/@{DIGEST_ATTR}",
                                 f"a version-{version} shard has no {DIGEST_ATTR}; its "
                                 f"schema_version was changed")
        return None
    if not has:
        raise StructureError(where, "attribute", f"/@{DIGEST_ATTR}", "attribute is missing")
    value = _attr_str(f, DIGEST_ATTR, where)
    if not HEX64.fullmatch(value):
        raise StructureError(where, "attribute", f"/@{DIGEST_ATTR}",
                             "must be 64 lowercase hex digits")
    return value


def _attrs(f: h5py.File, config_hash: str | None, embed_dim: int | None, where: str) -> int:
    shard_attrs(f, where)
    if _attr_str(f, "format", where) != schema.FORMAT_NAME:
        raise StructureError(where, "attribute", "/@format", f"is not {schema.FORMAT_NAME!r}")
    version = _attr_int(f, "schema_version", where)
    schema.check_version(version, where)
    stored_digest(f, version, where)
    schema.check_config_hash(_attr_str(f, "config_hash", where), config_hash, where)
    dim = _attr_int(f, "embed_dim", where)
    if embed_dim is not None and dim != embed_dim:
        raise SchemaError(f"{where}: embed_dim {dim} differs from the manifest's {embed_dim}")
    if not 0 < dim <= 1 << 16:
        raise StructureError(where, "attribute", "/@embed_dim", f"{dim} is out of range")
    return dim


def _offsets(f: h5py.File, name: str, total: int, where: str) -> None:
    off = f[name][()]
    if off.shape[0] == 0 or off[0] != 0 or off[-1] != total or np.any(np.diff(off) < 0):
        raise StructureError(where, "offsets", name,
                             f"must start at 0, never decrease and end at {total} (the rows of "
                             f"its table)")


def _pointers(f: h5py.File, name: str, limit: int, where: str) -> None:
    rows = f[name][()]
    if rows.size and (rows.min() < 0 or rows.max() >= limit):
        raise StructureError(where, "row-pointer", name, f"points outside the videos table "
                                                         f"({limit} rows)")


def check_shard(f: h5py.File, *, config_hash: str | None, embed_dim: int | None,
                where: str) -> dict[str, int]:
    """Check an open shard's structure (metadata and offsets only) against the schema.

    Args:
        f: the shard, opened read-only (a path or a file object: works for remote caches).
        config_hash: the cache's config hash (None: not checked).
        embed_dim: the manifest's D (None: the shard's own).
        where: how to name the shard in errors.

    Returns:
        Row counts {"videos", "frames", "scenes", "questions", "qframes", "aliases"}.

    Raises:
        StructureError (kind, path) for hostile or malformed structure; SchemaError for a shard
        of another cache or version.
    """
    dim = _attrs(f, config_hash, embed_dim, where)
    file_bytes = int(f.id.get_filesize())
    top = _links(f, "/", where)
    for name in top:
        if name not in GROUPS:
            raise StructureError(where, "extra-object", f"/{name}", "not part of the schema")
    seen: dict[tuple, str] = {}
    rows: dict[str, int] = {}
    for group_name in GROUPS:
        if group_name not in top:
            raise StructureError(where, "missing", f"/{group_name}", "group is missing")
        group = f[group_name]
        if not isinstance(group, h5py.Group):
            raise StructureError(where, "not-a-dataset", f"/{group_name}", "must be a group")
        wanted = {n.split("/")[1] for n in schema.SHARD_DATASETS if n.startswith(group_name + "/")}
        for name in _links(group, f"/{group_name}/", where):
            if name not in wanted:
                raise StructureError(where, "extra-object", f"/{group_name}/{name}",
                                     "not part of the schema")
        for short in sorted(wanted):
            name = f"{group_name}/{short}"
            want, tail = schema.SHARD_DATASETS[name]
            if short not in group:
                raise StructureError(where, "missing", name, "dataset is missing")
            ds = group[short]
            if not isinstance(ds, h5py.Dataset):
                raise StructureError(where, "not-a-dataset", name, "must be a dataset")
            token = h5py.h5o.get_info(ds.id).addr  # two hard links to one object share it
            if token in seen:
                raise StructureError(where, "shared-object", name,
                                     f"is the same object as {seen[token]}")
            seen[token] = name
            _storage(ds, name, where, file_bytes)
            if not _dtype_ok(ds, want):
                raise StructureError(where, "dtype", name,
                                     f"has dtype {ds.dtype}, expected {want}")
            shape = tuple(dim if t == "D" else t for t in tail)
            if ds.ndim != 1 + len(shape) or tuple(ds.shape[1:]) != shape:
                expected = f"(N, {', '.join(map(str, shape))})".replace(", )", ")")
                raise StructureError(where, "shape", name,
                                     f"has shape {ds.shape}, expected {expected}")
            _stored(ds, name, where, file_bytes)
            table = group_name
            n = ds.shape[0] - (1 if short.endswith("_offset") else 0)
            if rows.setdefault(table, n) != n:
                raise StructureError(where, "shape", name,
                                     f"has {n} rows, its table {table!r} has {rows[table]}")
    _offsets(f, "videos/frame_offset", rows["frames"], where)
    _offsets(f, "videos/scene_offset", rows["scenes"], where)
    _offsets(f, "questions/frame_offset", rows["qframes"], where)
    _pointers(f, "questions/video_row", rows["videos"], where)
    _pointers(f, "aliases/video_row", rows["videos"], where)
    return rows


def check_ids(ids, name: str, where: str) -> None:
    """Ids (video or question) must be non-empty, printable and at most MAX_ID_CHARS long.

    Args:
        ids: sequence of str as read from the shard.
        name: the dataset they came from.
        where: how to name the shard in errors.
    """
    if not len(ids):
        return
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    bad = np.flatnonzero((lengths == 0) | (lengths > MAX_ID_CHARS))
    if bad.size:
        i = int(bad[0])
        raise StructureError(where, "bad-id", f"{name}[{i}]",
                             f"id of {lengths[i]} characters (must be 1..{MAX_ID_CHARS})")
    if _CONTROL.search("".join(ids)):
        i = next(i for i, s in enumerate(ids) if _CONTROL.search(s))
        raise StructureError(where, "bad-id", f"{name}[{i}]",
                             f"id {ids[i][:60]!r} holds control characters")
