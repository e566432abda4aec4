"""Evaluation speed: frame selection at K = 512 and the frozen scorer's throughput (tiny, CPU).

Selection: every registered strategy (and the re-fused `prior-topn@cfr-novelty`) picks n = 32 of
K = 512 candidates for synthetic records; microseconds per question, best of 3 rounds. The
baseline in the same process is `uniform` (arithmetic only), so `select_over_uniform` says what a
strategy costs beyond the bookkeeping every strategy shares.
Scorer: the tiny random Qwen2.5-VL (vlm/tiny.py) scoring option logits for batches of 8
questions of 8 frames each; samples per second, best of 3.

Last line: `evaluate select_us=<prior-topn µs> scorer_sps=<samples/s>`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from synthetic_cache import make_question, make_video  # noqa: E402
from videocfr.evaluate.strategies import STRATEGIES, make_strategy, select  # noqa: E402
from videocfr.vlm.scorer import FrozenScorer, ScoreItem  # noqa: E402

K, N, QUESTIONS = 512, 32, 200


def time_strategy(name: str, records, rounds: int = 3) -> float:
    fn = make_strategy(name)
    best = float("inf")
    for _ in range(rounds):
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for video, question in records:
            select(fn, video, question, N, rng)
        best = min(best, (time.perf_counter() - t0) / len(records))
    return best * 1e6


def main() -> None:
    records = []
    for i in range(QUESTIONS // 20):
        v = make_video(f"v{i}", k=K, dim=512, seed=i, num_scenes=30, num_frames=K * 25)
        records += [(v, make_question(v, f"q{j}", seed=i * 100 + j)) for j in range(20)]
    names = [*STRATEGIES, "prior-topn@cfr-novelty"]
    us = {name: time_strategy(name, records) for name in names}
    for name in names:
        print(f"select {name:24s} {us[name]:9.1f} us/question  "
              f"select_over_uniform={us[name] / us['uniform']:.2f}")
    scorer = FrozenScorer.tiny(batch_size=8)
    rng = np.random.default_rng(0)
    items = [ScoreItem(rng.integers(0, 255, (8, 56, 84, 3), dtype=np.uint8), f"Q{i}?",
                       ["A. a", "B. b", "C. c", "D. d"], "A") for i in range(32)]
    scorer.option_logits(items[:8])  # warm-up
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        scorer.option_logits(items)
        best = min(best, time.perf_counter() - t0)
    print(f"scorer tiny: {len(items)} questions x 8 frames in {best:.3f} s")
    print(f"evaluate select_us={us['prior-topn']:.1f} scorer_sps={len(items) / best:.1f}")


if __name__ == "__main__":
    main()
