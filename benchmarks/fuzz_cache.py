"""Fuzz a small cache: byte-level mutants of its shard, each read by every reader in a fresh
process; every mutant must end refused or identical (tests/cache_fuzz.py defines the outcomes).

    python benchmarks/fuzz_cache.py --mutants 1000 --jobs 2 [--remote]

prints one line per outcome other than refused/same (with the mutant kept under --workdir), and
last:

    fuzz mutants=<n> refused=<n> same=<n> silent=<n> crash=<n> hang=<n> seconds=<f>

--remote serves each mutant from a local fsspec URL (memory:// inside the reading process) so
the remote path (cache_format/storage.py) gets the same treatment.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cache_fuzz import KINDS, OUTCOMES, differing_fields, judge, make_mutant  # noqa: E402
from synthetic_cache import make_cache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="mutants judged at once")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds before a reading process counts as hung")
    ap.add_argument("--cache", default=None, help="the cache to mutate (default: a synthetic "
                                                  "one of 4 videos)")
    ap.add_argument("--remote", action="store_true", help="read each mutant through a URL")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--seconds", type=float, default=None,
                    help="stop starting new mutants after this long; the line then counts the "
                         "mutants judged (mutants=<n judged>)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fuzz_cache_"))
    work.mkdir(parents=True, exist_ok=True)
    source = Path(args.cache) if args.cache else work / "source"
    if not args.cache and not source.exists():
        make_cache(source, n_videos=4, n_questions=2, n_failed=1)
    env = {"VIDEOCFR_TRUST_DIR": "off"}
    _, reference = judge(source, None, args.timeout, env, remote=args.remote)
    rng = np.random.default_rng(args.seed)
    plan = [(i, KINDS[i % len(KINDS)], int(rng.integers(2**31))) for i in range(args.mutants)]
    counts: Counter = Counter()
    kinds: Counter = Counter()  # the first verify problem's kind of each refused mutant
    t0 = time.perf_counter()

    def one(item):
        i, kind, seed = item
        if args.seconds is not None and time.perf_counter() - t0 > args.seconds:
            return None
        mutant = make_mutant(source, work / f"m{i:05d}-{kind}", kind, np.random.default_rng(seed))
        outcome, got = judge(mutant, reference, args.timeout, env, remote=args.remote)
        if outcome == "refused" and got["verify"]:
            tag = re.search(r"\[([a-z][a-z-]*)\] ", got["verify"][0])  # a kind, not an index
            kinds[tag.group(1) if tag else "value"] += 1
        if outcome in ("refused", "same"):
            shutil.rmtree(mutant)
        else:
            where = differing_fields(got, reference) if outcome == "silent" else str(got)[:300]
            print(f"{outcome}: {mutant} {where}", flush=True)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for n, outcome in enumerate(pool.map(one, plan), 1):
            if outcome is None:
                continue
            counts[outcome] += 1
            if n % 50 == 0:
                print(f"  {n}/{args.mutants} {dict(counts)}", flush=True)
    seconds = time.perf_counter() - t0
    print("fuzz mutants={} {} seconds={:.1f}".format(
        sum(counts.values()), " ".join(f"{k}={counts[k]}" for k in OUTCOMES), seconds))
    print("refused by verify, first problem's kind: " + " ".join(
        f"{k}={n}" for k, n in kinds.most_common()))


if __name__ == "__main__":
    main()
