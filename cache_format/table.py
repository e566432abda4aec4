"""PriorTable: every prior of a cache in RAM, looked up in O(1) by (video_id, question_id).

Why not a dict of 1M tuple keys: each lookup there chases ~4 pointers (index, entry, stored key,
value), and at 1M keys every one is a cache miss, so lookups get ~4x slower than at 10K. Here
the index is one open-addressing table in a numpy array: slot = [hash(video_id),
hash(question_id), start, end] (int64, 32 bytes, one cache line), linear probing at load factor
<= 0.5. A lookup reads one slot row and slices the flat prior array, so its cost hardly grows
with the table.

Keys are matched by the pair of Python string hashes (SipHash, 64-bit each, keyed per process):
two different keys collide only if a string hash collides, ~2^-64 per comparison. Keys that
collide at load time are detected and rejected. Python's hashes differ between processes, so the
slot table is rebuilt after unpickling (DataLoader workers started with spawn).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from . import schema
from .reader import Cache, Key, missing_key_error
from .structure import StructureError, check_ids

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant; low bits of a product depend on low bits only


def _slot(hv: int, hq: int, mask: int) -> int:
    return ((hv * _MIX) ^ hq) & mask


def _build_slots(hv: np.ndarray, hq: np.ndarray, start: np.ndarray,
                 end: np.ndarray) -> tuple[np.ndarray, int]:
    """Open-addressing table, int64 [S, 4] (S a power of two >= 2n; end == 0 marks empty).

    Returns:
        The table and the number of keys whose hash pair was already in it (duplicates).
    """
    n = hv.shape[0]
    size = 1 << max(4, int(2 * max(n, 1) - 1).bit_length())
    mask = size - 1
    with np.errstate(over="ignore"):
        pos = ((hv.view(np.uint64) * np.uint64(_MIX)) ^ hq.view(np.uint64)) & np.uint64(mask)
    pos = pos.astype(np.int64)
    owner = np.full(size, -1, np.int64)  # key placed in each slot
    pending = np.arange(n)
    duplicates = 0
    while pending.size:
        p = pos[pending]
        held = owner[p]
        free = held < 0
        busy = np.flatnonzero(~free)
        same = np.zeros(pending.size, bool)
        same[busy] = (hv[held[busy]] == hv[pending[busy]]) & (hq[held[busy]] == hq[pending[busy]])
        duplicates += int(same.sum())
        cand, cp = pending[free], p[free]
        taken, first = np.unique(cp, return_index=True)  # the earliest key wins each slot
        owner[taken] = cand[first]
        winner = owner[cp]  # a key that lost a free slot to an equal key is a duplicate too
        twin = (winner != cand) & (hv[winner] == hv[cand]) & (hq[winner] == hq[cand])
        duplicates += int(twin.sum())
        lost = ~same
        lost[np.flatnonzero(free)[first]] = False
        lost[np.flatnonzero(free)[twin]] = False
        pending = pending[lost]
        pos[pending] = (pos[pending] + 1) & mask
    slots = np.zeros((size, 4), np.int64)
    filled = np.flatnonzero(owner >= 0)
    keys = owner[filled]
    slots[filled, 0], slots[filled, 1] = hv[keys], hq[keys]
    slots[filled, 2], slots[filled, 3] = start[keys], end[keys]
    return slots, duplicates


class PriorTable:
    """All priors of a cache, in RAM, with O(1) lookup.

    Args:
        priors: float32 [sum K] every prior, concatenated.
        keys: (video_id, question_id) of each prior, in order.
        bounds: int64 [n, 2] (start, end) of each prior in `priors`.
        failed: video_id -> error of videos that failed in precompute.
        config_hash: the cache's config hash.
    """

    def __init__(self, priors: np.ndarray, video_ids: list[str], question_ids: list[str],
                 bounds: np.ndarray, failed: dict[str, str], config_hash: str):
        priors.flags.writeable = False
        self._priors = priors
        self._vids, self._qids = video_ids, question_ids
        self._bounds = bounds
        self._failed = failed
        self.config_hash = config_hash
        self._index()

    def _index(self) -> None:
        n = len(self._qids)
        # one str object per video, repeated: its hash is computed once and cached by Python
        hv = np.fromiter(map(hash, self._vids), np.int64, n)
        hq = np.fromiter(map(hash, self._qids), np.int64, n)
        self._slots, duplicates = _build_slots(hv, hq, self._bounds[:, 0], self._bounds[:, 1])
        self._mask = self._slots.shape[0] - 1
        if duplicates:
            if len(set(zip(self._vids, self._qids))) != n:
                raise StructureError("cache", "duplicate-key", "questions/question_id",
                                     f"{duplicates} (video_id, question_id) keys appear twice "
                                     f"in the cache")
            raise schema.CacheError("two keys share a string hash pair; rerun (hashes are "
                                    "keyed per process) and report it")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_slots"], state["_mask"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index()  # string hashes are keyed per process

    @classmethod
    def load(cls, path: str | Path, expect_config_hash: str | None = None) -> PriorTable:
        """Read the priors of every shard of the cache at `path`."""
        cache = Cache(path, expect_config_hash)
        cache.open_all()  # every shard checked in parallel child processes, once per sha256
        chunks, vids, qids, bounds, failed, base = [], [], [], [], {}, 0
        for i, shard in enumerate(cache.shard_paths):
            f = cache.file(i)
            prior = f["qframes/prior"][()]
            off = f["questions/frame_offset"][()]  # checked by check_shard (in cache.file)
            names = f["videos/video_id"].asstr()[()]
            check_ids(names, "videos/video_id", str(shard))
            if f["aliases/video_id"].shape[0]:  # merged caches: a question may name an alias
                vids += f["questions/video_id"].asstr()[()].tolist()
            else:  # decode each video id once, not once per question (video_row is checked)
                vids += names[f["questions/video_row"][()]].tolist()
            shard_qids = f["questions/question_id"].asstr()[()]
            check_ids(shard_qids, "questions/question_id", str(shard))
            qids += shard_qids.tolist()
            bounds.append(np.stack([off[:-1], off[1:]], 1) + base)
            status = f["videos/status"].asstr()[()]
            for row in np.flatnonzero(status != "ok"):
                failed[str(names[row])] = str(f["videos/error"].asstr()[row])
            chunks.append(prior)
            base += prior.shape[0]
        cache.close()
        priors = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        bounds_arr = np.concatenate(bounds) if bounds else np.zeros((0, 2), np.int64)
        return cls(priors, vids, qids, bounds_arr, failed, cache.config_hash)

    def __len__(self) -> int:
        return len(self._qids)

    def keys(self) -> list[Key]:
        return list(zip(self._vids, self._qids))

    def find(self, video_id: str, question_id: str) -> np.ndarray | None:
        """float32 [K] read-only prior, or None when the key is absent (no message built)."""
        hv, hq = hash(video_id), hash(question_id)
        mask, slots = self._mask, self._slots
        i = ((hv * _MIX) ^ hq) & mask
        while True:
            shv, shq, start, end = slots[i].tolist()
            if shv == hv and shq == hq and end:
                return self._priors[start:end]
            if not end:
                return None
            i = (i + 1) & mask

    def get(self, video_id: str, question_id: str) -> np.ndarray:
        """float32 [K] read-only prior. Raises KeyError naming the key and close keys."""
        prior = self.find(video_id, question_id)
        if prior is None:
            raise self._missing(video_id, question_id)
        return prior

    def __contains__(self, key: Key) -> bool:
        return self.find(*key) is not None

    def get_batch(self, keys: Iterable[Key]) -> list[np.ndarray]:
        """float32 [K] priors of many keys; raises KeyError on the first missing one."""
        return [self.get(v, q) for v, q in keys]

    def _missing(self, video_id: str, question_id: str) -> KeyError:
        by_video: dict[str, list[str]] = {}
        for vid, qid in zip(self._vids, self._qids):
            by_video.setdefault(vid, []).append(qid)
        for vid in self._failed:
            by_video.setdefault(vid, [])
        return missing_key_error(video_id, question_id, by_video, self._failed)
