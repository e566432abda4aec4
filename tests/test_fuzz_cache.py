"""A seeded, bounded fuzz of a small cache (CI size; benchmarks/fuzz_cache.py runs 1000).

Byte-level mutants of the shard, the manifest re-signed, each read by every reader in a fresh
process (tests/cache_fuzz.py): none may hang or crash the reading process, and none may be read
with other values than the original's without a refusal. Embeddings and saliences carry
fletcher32 checksums, and every value of the (schema version 2) shard — strings, frame indices,
timestamps, scene bounds included — is covered by its `values_sha256`, which every reader's
check recomputes (docs/cache-format.md, "What a reader promises"). The same holds for mutants
served from an fsspec URL.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from cache_fuzz import KINDS, differing_fields, judge, make_mutant
from synthetic_cache import make_cache

LOCAL, REMOTE = 20, 5
TIMEOUT_S = 300  # per reading process; a check's own limit is 20 s (VIDEOCFR_CHECK_TIMEOUT)
ENV = {"VIDEOCFR_TRUST_DIR": "off", "VIDEOCFR_CHECK_TIMEOUT": "20"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "source"
    make_cache(path, n_videos=4, n_questions=2, n_failed=1)
    outcome, reference = judge(path, None, TIMEOUT_S, ENV)
    assert outcome == "same" and reference["verify"] == [], reference
    return path, reference


def _fuzz(source, tmp_path, n: int, seed: int, remote: bool) -> Counter:
    path, reference = source
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        mutant = make_mutant(path, tmp_path / f"m{i}-{kind}", kind, rng)
        outcome, got = judge(mutant, reference, TIMEOUT_S, ENV, remote=remote)
        counts[outcome] += 1
        assert outcome in ("refused", "same"), (mutant, outcome,
                                                differing_fields(got, reference) or got)
    return counts


def test_fuzz_local(source, tmp_path, capsys):
    counts = _fuzz(source, tmp_path, LOCAL, seed=20, remote=False)
    with capsys.disabled():
        print(f"\nfuzz mutants={LOCAL} " + " ".join(f"{k}={counts[k]}" for k in
                                                    ("refused", "same", "silent")))
    assert counts["refused"] >= LOCAL // 2  # the mutants do reach the checks


def test_fuzz_remote(source, tmp_path):
    path, reference = source
    outcome, through_url = judge(path, reference, TIMEOUT_S, ENV, remote=True)
    assert outcome == "same" and through_url["fields"] == reference["fields"]
    counts = _fuzz(source, tmp_path, REMOTE, seed=21, remote=True)
    assert counts["refused"] >= 1
