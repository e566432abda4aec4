"""Re-fusing a cache's priors vs computing them: `videocfr cache re-fuse` against precompute.

1. Full precompute of a dataset (default: the built-in demo, configs/precompute/demo.yaml:
   ViT-B-32 with random weights on CPU; decode + scenes + CLIP + saliences + fusion + shards),
   timed end to end in this process.
2. `re_fuse_cache` of that cache with preset videocfr-ref, then cfr-novelty (reads the shards,
   checks every salience, re-fuses, writes and finalizes a new cache): best of `--repeats`.
   speedup = precompute wall / re-fuse wall, on the same dataset.
3. The demo has only a handful of questions, so its re-fuse time is mostly fixed costs (open,
   write, fsync, manifest). Throughput is measured apart on a synthetic cache of `--questions`
   questions (K = 32, D = 512, 2 questions per video, random valid saliences):
   questions_per_s = questions / re-fuse wall (preset cfr-novelty, the costliest: it recomputes
   the novelty source from the stored embeddings).

The last line is `re-fuse speedup=<f> questions_per_s=<f>`; the target is speedup >= 100.

    python benchmarks/bench_re_fuse.py [--dataset demo] [--config configs/precompute/demo.yaml]
                                      [--questions 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helper modules, by their bare names

from synthetic_cache import make_question, make_video  # noqa: E402
from videocfr.cache_format import Cache, FusionConfig, ShardWriter, finalize_cache  # noqa: E402
from videocfr.cache_format.re_fuse import re_fuse_cache  # noqa: E402


def precompute(config: str, dataset: str, out: Path) -> float:
    from videocfr.precompute.cli import main
    from videocfr.precompute.datasets import load_dataset

    load_dataset(dataset)  # the demo's clips are made on first use: not part of the timing
    t0 = time.perf_counter()
    rc = main(["--config", config, "--dataset", dataset, "--out", str(out)])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"precompute exited {rc}")
    return wall


def time_re_fuse(source: Path, root: Path, preset: str, repeats: int) -> float:
    best = float("inf")
    for r in range(repeats):
        out = root / f"re-fused-{preset}-{r}"
        t0 = time.perf_counter()
        re_fuse_cache(source, out, FusionConfig(preset=preset))
        best = min(best, time.perf_counter() - t0)
        shutil.rmtree(out)
    return best


def synthetic_cache(path: Path, questions: int, k: int = 32, dim: int = 512) -> None:
    """A cache of questions/2 videos x 2 questions, random but valid saliences (cfr priors)."""
    with ShardWriter(path, {"bench": "re-fuse", "k": k}, embed_dim=dim,
                     model={"name": "bench", "pretrained": "random"}, max_videos=1000) as w:
        for i in range((questions + 1) // 2):
            v = make_video(f"v{i:06d}", k=k, dim=dim, seed=i, num_scenes=1 + i % 4)
            w.add(v, [make_question(v, f"q{j}", seed=2 * i + j) for j in range(2)])
    finalize_cache(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--config", default=str(REPO / "configs/precompute/demo.yaml"))
    parser.add_argument("--questions", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-re-fuse-") as tmp:
        root = Path(tmp)
        t_pre = precompute(args.config, args.dataset, root / "cache")
        counts = Cache(root / "cache").manifest["counts"]
        n = counts["questions"]
        print(f"precompute {args.dataset} ({Path(args.config).name}): {counts['videos']} videos "
              f"({counts['failed_videos']} failed), {n} questions: {t_pre:.2f} s")
        t_ref = time_re_fuse(root / "cache", root, "videocfr-ref", args.repeats)
        t_nov = time_re_fuse(root / "cache", root, "cfr-novelty", args.repeats)
        print(f"re-fuse same cache, best of {args.repeats}: videocfr-ref {t_ref:.4f} s, "
              f"cfr-novelty {t_nov:.4f} s")
        speedup = t_pre / max(t_ref, t_nov)
        print(f"speedup (precompute / slower re-fuse, same dataset) = {speedup:.1f}")
        synthetic_cache(root / "big", args.questions)
        t_big = time_re_fuse(root / "big", root, "cfr-novelty", 1)
        qps = args.questions / t_big
        print(f"re-fuse synthetic cache: {args.questions} questions (K = 32, D = 512), "
              f"cfr-novelty: {t_big:.2f} s = {qps:.0f} questions/s; precompute above: "
              f"{n / t_pre:.2f} questions/s (per-question ratio {qps / (n / t_pre):.0f})")
    print(f"re-fuse speedup={speedup:.1f} questions_per_s={qps:.0f}")


if __name__ == "__main__":
    main()
