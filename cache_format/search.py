"""Text → frame search over every frame embedding of a cache, with a faiss index.

`build_index` reads every sampled frame's CLIP embedding (float16 [F, D], L2-normalised) and
stores a faiss index as the cache addition `faiss-index` (additions.py: atomic, checksummed, tied
to the cache's config hash; v1 readers ignore it):

    additions/faiss-index/index.faiss   inner product = cosine. Exact `Flat` up to `flat_max`
                                        frames; above, `IVF{nlist},PQ{m}` (compressed, approximate)
    additions/faiss-index/ids.h5        row r of the index -> video id, frame index, time
                                        (and the shard / frame row, to re-score exactly)
    addition.json meta                  model, embed_dim, kind, frames, nlist, nprobe, faiss version

`search` takes query vectors (float32 [Q, D]); the CLI embeds the query text with the cache's own
CLIP model (precompute/cache_model.py), so this module needs numpy, h5py and faiss only. IVF-PQ
candidates are re-scored with the exact stored embeddings, so every returned score is the exact
cosine. An index of another cache (config hash), another model or dimension is refused.
faiss-gpu is used for training and adding when it is installed and a GPU is visible.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from . import schema
from .additions import load_addition, write_addition
from .reader import Cache
from .storage import RemotePath, local_only, open_h5

log = logging.getLogger(__name__)

ADDITION = "faiss-index"
VERSION = 1
FLAT_MAX = 200_000  # frames; Flat is exact and fast enough up to here (~0.4 GB at D = 512)
INDEX_FILE, IDS_FILE = "index.faiss", "ids.h5"
_STR = h5py.string_dtype("utf-8")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise schema.CacheError("the search index needs faiss: pip install faiss-cpu (or "
                                "faiss-gpu-cu12; both come with the 'precompute' / 'gpu' "
                                "extras)") from None
    return faiss


def _gpu_count(faiss) -> int:
    return int(faiss.get_num_gpus()) if hasattr(faiss, "StandardGpuResources") else 0


@dataclass
class Hit:
    """One search result."""

    video_id: str
    frame_index: int
    time: float
    score: float


def _read_frames(cache: Cache):
    """Every ok frame: (embeddings float32 [F, D], ids dict of arrays, video ids)."""
    embs, video_rows, index, times, shard, row = [], [], [], [], [], []
    video_ids: list[str] = []
    for i in tqdm(range(len(cache.shard_paths)), desc="index: read", unit="shard"):
        f = cache.file(i)
        fo = f["videos/frame_offset"][()]
        k = np.diff(fo)
        vids = f["videos/video_id"].asstr()[()]
        emb = f["frames/embedding"][()].astype(np.float32)
        if emb.shape[0] != fo[-1] or np.any(k < 0):
            raise schema.SchemaError(f"{cache.shard_paths[i]}: videos/frame_offset does not "
                                     f"partition frames/*")
        if not np.isfinite(emb).all():
            raise schema.SchemaError(f"{cache.shard_paths[i]}: frames/embedding holds NaN/inf")
        have = np.flatnonzero(k > 0)
        base = len(video_ids)
        video_ids += [str(vids[v]) for v in have]
        local = np.full(len(vids), -1, np.int64)
        local[have] = base + np.arange(have.size)
        video_rows.append(np.repeat(local, k))
        embs.append(emb)
        index.append(f["frames/index"][()])
        times.append(f["frames/timestamp"][()])
        shard.append(np.full(emb.shape[0], i, np.int32))
        row.append(np.arange(emb.shape[0], dtype=np.int64))

    def cat(xs: list, dt) -> np.ndarray:
        return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

    ids = {"video": cat(video_rows, np.int64), "frame_index": cat(index, np.int64),
           "timestamp": cat(times, np.float64), "shard": cat(shard, np.int32),
           "frame_row": cat(row, np.int64)}
    d = cache.embed_dim
    x = np.concatenate(embs) if embs else np.zeros((0, d), np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), ids, video_ids


def _pq_m(d: int) -> int:
    """Sub-quantizers: about 8 dimensions each, dividing D."""
    for m in (64, 48, 32, 16, 8, 4, 2, 1):
        if d % m == 0 and d // m >= 4 or m == 1:
            return m
    return 1


def build_index(cache_path: str | Path, flat_max: int = FLAT_MAX, nprobe: int = 16,
                seed: int = 0) -> dict:
    """Build the `faiss-index` addition of a cache; returns its meta.

    Args:
        cache_path: a finished local cache.
        flat_max: up to this many frames the index is exact (Flat), above it IVF-PQ.
        nprobe: IVF lists visited per query (IVF-PQ only; stored, overridable at search).
        seed: seed of the training sample and of k-means.

    Raises:
        CacheError: no frames, or faiss missing.
    """
    faiss = _faiss()
    cache = Cache(local_only(cache_path, "`videocfr cache index` (it writes the index)"))
    x, ids, video_ids = _read_frames(cache)
    n, d = x.shape
    if n == 0:
        raise schema.CacheError(f"cache {cache.path} holds no frame embeddings to index")
    metric = faiss.METRIC_INNER_PRODUCT
    if n <= flat_max:
        kind, nlist = "flat", 0
        index = faiss.IndexFlatIP(d)
    else:
        kind = "ivfpq"
        nlist = int(min(65536, max(1, 4 * math.sqrt(n)), max(1, n // 39)))
        index = faiss.index_factory(d, f"IVF{nlist},PQ{_pq_m(d)}", metric)
        # polysemous codes serve Hamming pre-filtering, which this search does not use; their
        # training costs ~10x the rest
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    gpus = _gpu_count(faiss)
    work = index
    if gpus:
        res = faiss.StandardGpuResources()
        work = faiss.index_cpu_to_gpu(res, 0, index)
        log.info("building the index on GPU (faiss-gpu, %d visible)", gpus)
    if kind == "ivfpq":
        rng = np.random.default_rng(seed)
        sample = x[np.sort(rng.choice(n, size=min(n, max(256 * 39, 64 * nlist)),
                                      replace=False))]
        work.train(sample)
    work.add(x)
    if gpus:
        index = faiss.index_gpu_to_cpu(work)
    model = cache.manifest["model"]
    meta = {"kind": kind, "frames": int(n), "embed_dim": int(d), "metric": "inner_product",
            "nlist": nlist, "nprobe": int(nprobe) if kind == "ivfpq" else 0,
            "model": {"name": model["name"], "pretrained": model["pretrained"]},
            "faiss_version": getattr(faiss, "__version__", "unknown")}
    with write_addition(cache.path, ADDITION, VERSION, meta) as stage:
        faiss.write_index(index, str(stage / INDEX_FILE))
        with h5py.File(stage / IDS_FILE, "w", track_order=False) as f:
            f.create_dataset("videos/video_id", data=np.array(video_ids, dtype=object),
                             dtype=_STR, track_times=False)
            for name, arr in ids.items():
                f.create_dataset(f"rows/{name}", data=arr, track_times=False)
    cache.close()
    log.info("indexed %d frames of %s (%s, D = %d)", n, cache.path, kind, d)
    return meta


@dataclass
class FrameIndex:
    """A loaded, checked search index of a cache."""

    cache: Cache
    index: object
    meta: dict
    video_ids: np.ndarray
    rows: dict

    @classmethod
    def load(cls, cache_path: str | Path | Cache) -> FrameIndex:
        """Load and check the `faiss-index` addition (sha256, cache, model, sizes)."""
        faiss = _faiss()
        cache = cache_path if isinstance(cache_path, Cache) else Cache(cache_path)
        add = load_addition(cache.path, ADDITION, version=VERSION)
        meta = add.meta
        model = cache.manifest["model"]
        if meta.get("model") != {"name": model["name"], "pretrained": model["pretrained"]}:
            raise schema.CacheError(f"the search index of {cache.path} was built with model "
                                    f"{meta.get('model')}, the cache's is {model}; rebuild it "
                                    f"with `videocfr cache index`")
        if meta.get("embed_dim") != cache.embed_dim:
            raise schema.CacheError(f"the search index has D = {meta.get('embed_dim')}, the "
                                    f"cache {cache.embed_dim}; rebuild it")
        index_path = add.path(INDEX_FILE)
        if isinstance(index_path, RemotePath):  # shared storage: faiss reads from memory
            with index_path.open("rb") as f:
                index = faiss.deserialize_index(np.frombuffer(f.read(), dtype=np.uint8))
        else:
            index = faiss.read_index(str(index_path))
        where = add.path(IDS_FILE)
        try:
            with open_h5(where) as f:
                video_ids = f["videos/video_id"].asstr()[()]
                rows = {name: f[f"rows/{name}"][()] for name in
                        ("video", "frame_index", "timestamp", "shard", "frame_row")}
        except (OSError, KeyError, TypeError) as err:
            raise schema.SchemaError(f"{where}: not a readable id table ({err})") from err
        n = index.ntotal
        if index.d != cache.embed_dim or n != meta.get("frames"):
            raise schema.CacheError(f"{add.path(INDEX_FILE)}: {n} vectors of D = {index.d}, "
                                    f"addition.json says {meta.get('frames')} of D = "
                                    f"{meta.get('embed_dim')}; rebuild the index")
        for name, arr in rows.items():
            if arr.shape != (n,):
                raise schema.SchemaError(f"{where}: rows/{name} has shape {arr.shape}, the "
                                         f"index holds {n} vectors")
        if n and (rows["video"].min() < 0 or rows["video"].max() >= len(video_ids)
                  or rows["shard"].min() < 0 or rows["shard"].max() >= len(cache.shard_paths)):
            raise schema.SchemaError(f"{where}: rows point outside the video or shard tables")
        return cls(cache, index, meta, video_ids, rows)

    def _exact(self, cand: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Exact cosines of candidate rows against one query, from the stored embeddings."""
        out = np.empty(cand.shape[0], np.float32)
        for s in np.unique(self.rows["shard"][cand]):
            pick = np.flatnonzero(self.rows["shard"][cand] == s)
            fr = self.rows["frame_row"][cand[pick]]
            order = np.argsort(fr)
            f = self.cache.file(int(s))
            emb = f["frames/embedding"][fr[order]].astype(np.float32)  # increasing rows
            out[pick[order]] = emb @ q
        return out

    def search(self, queries: np.ndarray, top: int = 20, nprobe: int | None = None
               ) -> list[list[Hit]]:
        """Top frames of each query.

        Args:
            queries: float32 [Q, D] (normalised inside).
            top: hits per query.
            nprobe: IVF lists to visit (default: the index's).

        Returns:
            Per query, up to `top` hits, best first; scores are exact cosines.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.index.d:
            raise ValueError(f"query vectors have D = {q.shape[1]}, the index {self.index.d}: "
                             f"embed the text with the cache's model")
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        top = max(1, min(int(top), self.index.ntotal))
        approx = self.meta.get("kind") != "flat"
        k = min(self.index.ntotal, top * 10) if approx else top
        if approx:
            self.index.nprobe = int(nprobe or self.meta.get("nprobe") or 16)
        scores, labels = self.index.search(q, k)
        out = []
        for qi in range(q.shape[0]):
            cand = labels[qi][labels[qi] >= 0]
            sc = self._exact(cand, q[qi]) if approx else scores[qi][:cand.size]
            order = np.argsort(-sc, kind="stable")[:top]
            out.append([Hit(video_id=str(self.video_ids[self.rows["video"][cand[j]]]),
                            frame_index=int(self.rows["frame_index"][cand[j]]),
                            time=float(self.rows["timestamp"][cand[j]]),
                            score=float(sc[j])) for j in order])
        return out
