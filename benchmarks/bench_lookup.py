"""Prior lookup speed: PriorTable over synthetic caches of 10K and 1M questions (K = 32).

Prints per-lookup p50/p99 (single `get`, timed one by one with perf_counter_ns, timer overhead
included), the ratio of the 1M median to the 10K median (O(1): ~1), the time to load the 1M
table, and last the line the design card asks for:

    lookup p50_us=<f> p99_us=<f> ratio_1m_10k=<f> load_1m_s=<f> load_1m_cached_s=<f>
        load_1m_new_process_s=<f>

load_1m_s is the first load (every shard hashed and checked in a child process,
cache_format/sandbox.py); load_1m_cached_s a second load in the same process (the checks
remembered by sha256); load_1m_new_process_s a load in a fresh process that finds the passes in
the trust record (a temporary one under --workdir).

Caches are written once under --workdir (default: a temp dir) and reused with --keep.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from videocfr.cache_format import (
    PriorTable,
    QuestionRecord,
    ShardWriter,
    VideoRecord,
    finalize_cache,
)
from videocfr.cache_format.fusion import FUSION_INPUTS

K, DIM = 32, 16  # embeddings are not read by a lookup; a small D keeps the 1M cache small
QUESTIONS_PER_VIDEO = 50
CONFIG = {"benchmark": "bench_lookup", "sampling": {"num_frames": K}}
MODEL = {"name": "synthetic", "pretrained": "random"}


def build(path: Path, n_questions: int, seed: int = 0) -> None:
    """A valid cache of `n_questions` questions with random priors."""
    rng = np.random.default_rng(seed)
    n_videos = n_questions // QUESTIONS_PER_VIDEO
    idx = np.arange(0, 8 * K, 8, dtype=np.int64)
    emb = np.full((K, DIM), 0.25, np.float16)
    ones = np.ones(K, np.float32)
    rep = np.zeros(K, bool)
    rep[0] = True
    with ShardWriter(path, CONFIG, embed_dim=DIM, model=MODEL, max_videos=2000) as w:
        for v in range(n_videos):
            vid = f"video_{v:07d}"
            video = VideoRecord(video_id=vid, path=f"{vid}.mp4", content_hash=f"{v:064x}",
                                fps=30.0, duration=8 * K / 30, num_frames=8 * K,
                                frame_indices=idx, timestamps=idx / 30.0,
                                scenes=np.array([[0, 8 * K]]), frame_scene=np.zeros(K, np.int32),
                                scene_rep=rep, embeddings=emb)
            logits = rng.standard_normal((QUESTIONS_PER_VIDEO, K))
            priors = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            qs = [QuestionRecord(video_id=vid, question_id=f"q{j:03d}", question="?", options=[],
                                 answer="A", problem_type="multiple choice",
                                 text_embedding=emb[0], prior=priors[j].astype(np.float32),
                                 **{name: ones for name in FUSION_INPUTS})
                  for j in range(QUESTIONS_PER_VIDEO)]
            w.add(video, qs)
    finalize_cache(path)


def time_lookups(table: PriorTable, keys: list[tuple[str, str]]) -> np.ndarray:
    """Nanoseconds of each single lookup."""
    get, clock = table.get, time.perf_counter_ns
    out = np.empty(len(keys), np.int64)
    for i, (vid, qid) in enumerate(keys):
        t0 = clock()
        get(vid, qid)
        out[i] = clock() - t0
    return out


def sample_keys(n_questions: int, n: int, seed: int) -> list[tuple[str, str]]:
    rnd = random.Random(seed)
    keys = []
    for _ in range(n):
        q = rnd.randrange(n_questions)
        keys.append((f"video_{q // QUESTIONS_PER_VIDEO:07d}", f"q{q % QUESTIONS_PER_VIDEO:03d}"))
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None, help="where the caches are built (default: temp)")
    ap.add_argument("--keep", action="store_true", help="keep and reuse the built caches")
    ap.add_argument("--lookups", type=int, default=300_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_lookup_"))
    trust = work / "trust"
    shutil.rmtree(trust, ignore_errors=True)
    os.environ["VIDEOCFR_TRUST_DIR"] = str(trust)
    sizes = {"10k": 10_000, "1m": args.large}
    try:
        for name, n in sizes.items():
            if not (work / name / "manifest.json").exists():
                t0 = time.perf_counter()
                build(work / name, n)
                print(f"built {name}: {n} questions in {time.perf_counter() - t0:.1f} s")
        results = {}
        for name, n in sizes.items():
            gc.collect()
            t0 = time.perf_counter()
            table = PriorTable.load(work / name)
            load_s = time.perf_counter() - t0
            keys = sample_keys(n, args.lookups, seed=1)
            time_lookups(table, keys[:20_000])  # warm caches
            ns = time_lookups(table, keys)
            t0 = time.perf_counter()
            table.get_batch(keys)
            batch_us = (time.perf_counter() - t0) / len(keys) * 1e6
            results[name] = (np.percentile(ns, 50) / 1e3, np.percentile(ns, 99) / 1e3, load_s)
            print(f"{name}: {len(table)} priors, load {load_s:.2f} s, single p50 "
                  f"{results[name][0]:.2f} us p99 {results[name][1]:.2f} us, get_batch "
                  f"{batch_us:.2f} us/key")
            del table
        gc.collect()
        t0 = time.perf_counter()
        PriorTable.load(work / "1m")
        cached = time.perf_counter() - t0
        code = ("import sys, time; from videocfr.cache_format import PriorTable; "
                "t = time.perf_counter(); PriorTable.load(sys.argv[1]); "
                "print(time.perf_counter() - t)")
        fresh = float(subprocess.run([sys.executable, "-c", code, str(work / "1m")], check=True,
                                     capture_output=True, text=True).stdout.split()[-1])
        p50, p99, load = results["1m"]
        ratio = p50 / results["10k"][0]
        print(f"lookup p50_us={p50:.3f} p99_us={p99:.3f} ratio_1m_10k={ratio:.3f} "
              f"load_1m_s={load:.3f} load_1m_cached_s={cached:.3f} "
              f"load_1m_new_process_s={fresh:.3f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
