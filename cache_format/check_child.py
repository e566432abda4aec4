"""The child process that parses an untrusted shard: `python -m videocfr.cache_format.check_child`.

The parent (cache_format/sandbox.py) passes an open file descriptor of the shard (the exact inode
whose sha256 it computed) and a JSON request on argv:

    {"fd": int, "level": "read" | "values", "where": str, "config_hash": str | None,
     "embed_dim": int | None, "memory": int (bytes of address space)}

The child first caps its own address space (RLIMIT_AS) and core dumps, then imports h5py and
runs the check on /proc/self/fd/<fd>:

- level "read": the structural check (structure.check_shard), then every dataset read whole, in
  row blocks (strings decoded as UTF-8), so that every byte a reader may later parse in its own
  process has been parsed here first, then how the tables fit together
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

BLOCK_BYTES = 32 << 20  # rows read per block: bounds the child's memory on large shards


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limit > 0:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


NONZERO_ROWS = ("frames/embedding", "questions/text_embedding")  # no image or text embeds to 0


def _read_blocks(ds, name: str = "") -> None:
    """Read one dataset whole, in row blocks of <= BLOCK_BYTES (strings decoded as UTF-8).

    Rows of NONZERO_ROWS must not be all zeros: a chunk zeroed together with its fletcher32
    checksum (the checksum of zeros is 0) would otherwise read as zero embeddings.
    """
    import h5py
    import numpy as np

    is_str = h5py.check_string_dtype(ds.dtype) is not None
    row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * (16 if is_str
                                                              else ds.dtype.itemsize))
    step = max(1, BLOCK_BYTES // row)
    view = ds.asstr() if is_str else ds
    for start in range(0, ds.shape[0], step):
        block = view[start:start + step]
        if name in NONZERO_ROWS and block.size:
            zero = np.flatnonzero(~block.reshape(block.shape[0], -1).any(axis=1))
            if zero.size:
                from videocfr.cache_format.schema import SchemaError

                raise SchemaError(f"{name}[{start + int(zero[0])}] is all zeros: no frame or "
                                  f"text embeds to the zero vector (the data is corrupted)")


def read_all(f) -> None:
    """Read every dataset of the schema (a fletcher32 failure is a named SchemaError)."""
    from videocfr.cache_format import schema

    for name in schema.SHARD_DATASETS:
        try:
            _read_blocks(f[name], name)
        except OSError as err:
            if "filter" in str(err):
                raise schema.SchemaError(f"{name}: checksum (fletcher32) mismatch — the data "
                                         f"is corrupted") from err
            raise schema.SchemaError(f"{name}: unreadable ({err})") from err


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
            read_all(f)
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
