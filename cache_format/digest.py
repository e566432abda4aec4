"""`values_sha256`: one digest over every value a shard stores (schema version 2).

fletcher32 guards the embeddings and saliences chunk by chunk, but most of a shard's values —
the strings (ids, paths, question text, answers), the small tables (frame indices, timestamps,
scene bounds, fps) — are stored contiguously or as variable-length strings, where HDF5 applies
no filter. So the writer reads its in-memory shard back once, hashes every value it reads, and
stores the digest as the root attribute `values_sha256`; the check child (check_child.py)
recomputes it while it reads every dataset anyway, and a shard whose values do not hash to it is
refused (kind "checksum"). A value changed after the shard was written — by a flipped bit, a
zeroed block (checksum and all) or a truncated string — is refused before any reader sees it.

The digest is sha256 over, in this order (docs/cache-format.md gives the same definition):

1. `videocfr-values-v2\\n`, then the canonical JSON of the shard attributes schema.SHARD_ATTRS
   (strings and integers), then `\\n`;
2. for each dataset of schema.SHARD_DATASETS, in that order: `NAME SHAPE\\n` (SHAPE the JSON
   list of its dimensions), then its values:
   - numbers: every element in row-major order as little-endian bytes of the schema's dtype
     (bool: one byte, 0 or 1);
   - strings: the 32-byte sha256 of the lengths (uint64 little-endian, in bytes) of every
     element's UTF-8 encoding, then the 32-byte sha256 of those encodings concatenated.

It does not depend on chunking, block sizes or where HDF5 put the bytes: only on the values.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from . import schema

DIGEST_ATTR = "values_sha256"
HEX64 = re.compile(r"[0-9a-f]{64}")
BLOCK_BYTES = 32 << 20  # rows read at once: bounds memory on large shards
STR_ITEM_BYTES = 16  # a variable-length string element, for block sizing


class ValuesDigest:
    """The running digest of a shard's values (fed dataset by dataset, block by block).

    Args:
        attrs: the shard attributes schema.SHARD_ATTRS (str or int values).
    """

    def __init__(self, attrs: dict):
        head = schema.canonical_json({k: attrs[k] for k in schema.SHARD_ATTRS})
        self._h = hashlib.sha256(b"videocfr-values-v2\n" + head.encode("utf-8") + b"\n")
        self._strings: tuple | None = None
        self._dtype: np.dtype | None = None

    def start(self, name: str, shape: tuple[int, ...]) -> None:
        """Begin dataset `name` of `shape`; its blocks follow through `add`."""
        self._end_dataset()
        self._h.update(f"{name} {json.dumps([int(n) for n in shape])}\n".encode())
        want = schema.SHARD_DATASETS[name][0]
        if want == schema.STR:
            self._strings, self._dtype = (hashlib.sha256(), hashlib.sha256()), None
        else:
            self._strings, self._dtype = None, np.dtype(want).newbyteorder("<")

    def add(self, block: np.ndarray) -> None:
        """The next rows of the current dataset (strings: an array of UTF-8 `bytes`)."""
        if self._strings is not None:
            lengths, data = self._strings
            items = block.ravel().tolist()
            lengths.update(np.fromiter(map(len, items), "<u8", len(items)).tobytes())
            data.update(b"".join(items))
        else:
            self._h.update(np.ascontiguousarray(block, dtype=self._dtype).tobytes())

    def _end_dataset(self) -> None:
        if self._strings is not None:
            self._h.update(self._strings[0].digest() + self._strings[1].digest())
            self._strings = None

    def hexdigest(self) -> str:
        self._end_dataset()
        return self._h.hexdigest()


def blocks(ds, block_bytes: int = BLOCK_BYTES):
    """(start row, rows) of one dataset read whole in row blocks; strings as UTF-8 `bytes`."""
    is_str = ds.dtype.kind == "O"
    row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64))
              * (STR_ITEM_BYTES if is_str else ds.dtype.itemsize))
    step = max(1, block_bytes // row)
    for start in range(0, ds.shape[0], step):
        yield start, ds[start:start + step]


def values_sha256(f, attrs: dict) -> str:
    """The digest of every value of the shard `f` (open; its structure already checked)."""
    digest = ValuesDigest(attrs)
    for name in schema.SHARD_DATASETS:
        ds = f[name]
        digest.start(name, ds.shape)
        for _, block in blocks(ds):
            digest.add(block)
    return digest.hexdigest()
