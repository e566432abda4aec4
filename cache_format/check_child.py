"""The child process that parses an untrusted shard: `python -m videocfr.cache_format.check_child`.

The parent (cache_format/sandbox.py) passes an open file descriptor of the shard (the exact inode
whose sha256 it computed) and a JSON request on argv:

    {"fd": int, "level": "read" | "values", "where": str, "config_hash": str | None,
     "embed_dim": int | None, "memory": int (bytes of address space)}

The child first caps its own address space (RLIMIT_AS) and core dumps, then imports h5py and
runs the check on /proc/self/fd/<fd>:

- level "read": the structural check (structure.check_shard), then every dataset read whole, in
  row blocks (strings decoded as UTF-8), so that every byte a reader may later parse in its own
  process has been parsed here first, the values hashed and compared with the shard's
  `values_sha256` (version 2, cache_format/digest.py), then how the tables fit together
  (verify.check_shard_tables: offsets, K, row pointers; not the float values);
- level "values": the above plus verify's value checks (verify.check_shard_values).

It prints one JSON line on stdout: {"status": "ok", "rows": {...}, "failed": int} or
{"status": "structure", "kind", "path", "detail"} / {"status": "schema", "message"} /
{"status": "unreadable", "message"} / {"status": "memory", "message"}. A hang or a crash prints
nothing: the parent's timeout and the exit status say which.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limit > 0:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


NONZERO_ROWS = ("frames/embedding", "questions/text_embedding")  # no image or text embeds to 0


def _check_block(name: str, start: int, block, is_str: bool) -> None:
    """Strings must decode as UTF-8; rows of NONZERO_ROWS must not be all zeros (a chunk zeroed
    together with its fletcher32 checksum, the checksum of zeros being 0, would otherwise read
    as zero embeddings in a version-1 shard)."""
    import numpy as np
    from videocfr.cache_format.schema import SchemaError

    if is_str:
        for i, item in enumerate(block.ravel().tolist()):
            try:
                item.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SchemaError(f"{name}[{start + i}] is not UTF-8 ({err})") from None
    elif name in NONZERO_ROWS and block.size:
        zero = np.flatnonzero(~block.reshape(block.shape[0], -1).any(axis=1))
        if zero.size:
            raise SchemaError(f"{name}[{start + int(zero[0])}] is all zeros: no frame or "
                              f"text embeds to the zero vector (the data is corrupted)")


def read_all(f, where: str = "shard") -> None:
    """Read every dataset of the schema, in row blocks, and check the values digest.

    A fletcher32 failure is a named SchemaError; a version-2 shard whose values do not hash to
    its `values_sha256` (cache_format/digest.py) is a StructureError of kind "checksum".
    """
    from videocfr.cache_format import schema
    from videocfr.cache_format.digest import DIGEST_ATTR, ValuesDigest, blocks
    from videocfr.cache_format.structure import StructureError, shard_attrs, stored_digest

    attrs = shard_attrs(f, where)
    expected = stored_digest(f, attrs["schema_version"], where)
    digest = ValuesDigest(attrs)
    for name in schema.SHARD_DATASETS:
        ds = f[name]
        is_str = ds.dtype.kind == "O"
        digest.start(name, ds.shape)
        try:
            for start, block in blocks(ds):
                digest.add(block)
                _check_block(name, start, block, is_str)
        except OSError as err:
            if "filter" in str(err):
                raise schema.SchemaError(f"{name}: checksum (fletcher32) mismatch — the data "
                                         f"is corrupted") from err
            raise schema.SchemaError(f"{name}: unreadable ({err})") from err
    if expected is not None and digest.hexdigest() != expected:
        raise StructureError(where, "checksum", f"/@{DIGEST_ATTR}",
                             "the shard's values do not hash to its values_sha256: a value "
                             "changed after the shard was written (the data is corrupted)")


def run(request: dict) -> dict:
    """The check of one shard; the JSON-able answer."""
    import h5py
    from videocfr.cache_format.schema import CacheError
    from videocfr.cache_format.structure import StructureError, check_shard

    where = request["where"]
    try:
        try:
            fd = request["fd"]
            if os.fstat(fd).st_nlink == 0:  # no name left (a remote shard's spool)
                f = h5py.File(os.fdopen(fd, "rb"), "r", locking=False)
            else:
                f = h5py.File(f"/proc/self/fd/{fd}", "r", locking=False)
        except OSError as err:
            return {"status": "unreadable", "message": f"not a readable HDF5 shard: {err}"}
        with f:
            rows = check_shard(f, config_hash=request["config_hash"],
                               embed_dim=request["embed_dim"], where=where)
            read_all(f, where)
            from videocfr.cache_format.verify import check_shard_tables, check_shard_values

            check = check_shard_values if request["level"] == "values" else check_shard_tables
            failed = check(f, rows)
        return {"status": "ok", "rows": rows, "failed": failed}
    except MemoryError as err:
        return {"status": "memory", "message": f"MemoryError {err}".strip()}
    except StructureError as err:
        return {"status": "structure", "kind": err.kind, "path": err.path, "detail": err.detail}
    except CacheError as err:
        msg, prefix = str(err), f"{where}: "
        return {"status": "schema", "message": msg[len(prefix):] if msg.startswith(prefix)
                else msg}
    except (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError,
            UnicodeDecodeError, OverflowError) as err:
        text = str(err)
        if "memory" in text.lower() and "alloc" in text.lower():
            return {"status": "memory", "message": f"{type(err).__name__}: {text}"}
        return {"status": "unreadable", "message": f"{type(err).__name__}: {text}"}


def main() -> None:
    request = json.loads(sys.argv[1])
    _limit_memory(int(request.get("memory") or 0))
    try:
        answer = run(request)
    except MemoryError:
        answer = {"status": "memory", "message": "MemoryError"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
