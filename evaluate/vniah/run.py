"""Run V-NIAH: precompute the haystacks, then score every frame-selection strategy.

For each haystack, each strategy chooses n of the cache's K candidate frames; it hits when one of
them lies inside the needle's span (no model needed: the needle is found or it is not). The prior
mass on the needle's candidates tells how much of the consensus prior the needle holds. Results:
`results.jsonl` (one row per haystack × strategy × n), `summary.json`, `summary.md` and heatmaps.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from videocfr.cache_format import Cache, CacheError
from videocfr.vlm.decoders import cache_decoder

from ..strategies import make_strategy, select
from .build import Needle, load_needles

log = logging.getLogger(__name__)

# The headline strategies (the figure line) and the others reported beside them.
HEADLINE = {"uniform": "uniform", "prior": "prior-topn",
            "prior_scene": "prior-topn@cfr:w_semantic=0", "novelty": "novelty",
            "prior_novelty": "prior-topn@cfr-novelty"}
DEFAULT_STRATEGIES = (*HEADLINE.values(), "random", "prior-its", "scene-reps", "aks")
DEFAULT_BUDGETS = (4, 8, 16, 32)


def precompute(build_dir: Path, cache_dir: Path, config: str) -> None:
    """The normal precompute job, as a user runs it (a subprocess of the `videocfr` command)."""
    cmd = [sys.executable, "-m", "videocfr", "precompute", "--config", config,
           "--dataset", str(build_dir / "dataset.yaml"), "--out", str(cache_dir)]
    log.info("precompute: %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"precompute of the haystacks failed (exit {done.returncode}):\n{tail}")


def needle_positions(timestamps: np.ndarray, needle: Needle) -> np.ndarray:
    """Candidate positions whose time lies inside the needle's span [start, end)."""
    ts = np.asarray(timestamps, np.float64)
    return np.flatnonzero((ts >= needle.start_s - 1e-6) & (ts < needle.end_s - 1e-6))


@dataclass
class Row:
    video_id: str
    haystack: str
    needle: str
    length_s: float
    depth: float
    strategy: str
    n: int
    hit: bool
    prior_mass: float
    correct: float | None = None  # the model's answer, when run with a scorer


def score(cache: Cache, needles: list[Needle], strategies: list[str], budgets: list[int],
          seed: int = 0, scorer=None, video_root: Path | None = None
          ) -> tuple[list[Row], dict[str, list[str]]]:
    """Hit rows for every (haystack, strategy, n), and the items that could not be scored.

    With a scorer (vlm.scorer.FrozenScorer), the model is also shown the chosen frames
    (decoded at their cached indices under `video_root`) and `correct` says whether the option
    with the highest logit is the needle's colour.
    """
    fns = {name: make_strategy(name) for name in strategies}
    rows: list[Row] = []
    problems: dict[str, list[str]] = defaultdict(list)
    for needle in tqdm(needles, desc="vniah score", unit="haystack"):
        try:
            video = cache.video(needle.video_id)
            question = cache.question(needle.video_id, "needle")
        except KeyError as err:
            what = "failed_video" if "failed" in str(err) else "missing_question"
            problems[what].append(f"{needle.video_id}: {err.args[0] if err.args else err}")
            continue
        truth = needle_positions(video.timestamps, needle)
        if truth.size == 0:
            problems["no_candidate_in_needle"].append(
                f"{needle.video_id}: no candidate frame inside the needle "
                f"[{needle.start_s}, {needle.end_s}) s; sample candidates more densely")
            continue
        mass = float(np.asarray(question.prior, np.float64)[truth].sum())
        for name, fn in fns.items():
            for n in budgets:
                if n > video.num_sampled:
                    problems["budget_over_k"].append(
                        f"{needle.video_id}: n={n} > K={video.num_sampled} ({name})")
                    continue
                rng = np.random.default_rng([seed, n, zlib.crc32(needle.video_id.encode())])
                pos = select(fn, video, question, n, rng)
                correct = None
                if scorer is not None:
                    correct = _answer(scorer, video, question, pos, video_root,
                                      cache_decoder(cache.config))
                rows.append(Row(needle.video_id, needle.haystack, needle.needle,
                                needle.length_s, needle.depth, name, n,
                                bool(np.isin(pos, truth).any()), mass, correct))
    return rows, dict(problems)


def _answer(scorer, video, question, pos: np.ndarray, video_root: Path,
            decoder: str = "decord") -> float:
    from videocfr.vlm.scorer import ScoreItem

    from ..frames import load_frames

    frames, ts = load_frames(video_root, video, pos, decoder=decoder)
    item = ScoreItem(frames, question.question, question.options, question.answer,
                     question.problem_type, ts)
    z = scorer.option_logits([item])[0]
    return float(item.letters()[int(np.argmax(z))] == question.answer.strip())


def accuracy(rows: list[Row], **match) -> float:
    """Mean answer correctness over matching rows that were answered (nan when none)."""
    vals = [r.correct for r in rows if r.correct is not None
            and all(getattr(r, k) == v for k, v in match.items())]
    return float(np.mean(vals)) if vals else float("nan")


def hit_rate(rows: list[Row], **match) -> float:
    """Mean hit over the rows whose fields equal `match` (nan when none)."""
    hits = [r.hit for r in rows if all(getattr(r, k) == v for k, v in match.items())]
    return float(np.mean(hits)) if hits else float("nan")


def summarise(rows: list[Row], problems: dict[str, list[str]], strategies: list[str],
              budgets: list[int]) -> dict:
    kinds = sorted({(r.haystack, r.needle) for r in rows})
    table = {f"{s}|{n}|{h}|{k}": hit_rate(rows, strategy=s, n=n, haystack=h, needle=k)
             for s in strategies for n in budgets for h, k in kinds}
    headline = {key: hit_rate(rows, strategy=name, n=8, needle="clip")
                for key, name in HEADLINE.items() if name in strategies}
    masses = {f"{h}|{k}": float(np.mean([r.prior_mass for r in rows
                                         if (r.haystack, r.needle) == (h, k)]))
              for h, k in kinds}
    answered = {f"{s}|{n}|{h}|{k}": accuracy(rows, strategy=s, n=n, haystack=h, needle=k)
                for s in strategies for n in budgets for h, k in kinds
                if any(r.correct is not None for r in rows)}
    return {"hit_rate": table, "accuracy": answered, "headline_n8_clip": headline,
            "prior_mass_on_needle": masses,
            "haystacks": len({r.video_id for r in rows}),
            "problems": {k: len(v) for k, v in problems.items()}, "problem_items": problems}


def markdown(summary: dict, strategies: list[str], budgets: list[int]) -> str:
    kinds = sorted({tuple(key.split("|")[2:]) for key in summary["hit_rate"]})
    head = "| strategy | n | " + " | ".join(f"{h}/{k}" for h, k in kinds) + " |"
    lines = ["# V-NIAH needle hit rate", "", head, "|" + "---|" * (2 + len(kinds))]
    for s in strategies:
        for n in budgets:
            vals = [summary["hit_rate"].get(f"{s}|{n}|{h}|{k}", float("nan")) for h, k in kinds]
            lines.append(f"| {s} | {n} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    lines += ["", "Prior mass on the needle's candidates (cached prior): " + ", ".join(
        f"{k} {v:.3f}" for k, v in summary["prior_mass_on_needle"].items())]
    if summary["problems"]:
        lines += ["", "Not scored: " + ", ".join(f"{k} {v}" for k, v in
                                                   summary["problems"].items())]
    return "\n".join(lines) + "\n"


def figure_line(summary: dict) -> str:
    h = summary["headline_n8_clip"]
    return "vniah n=8 " + " ".join(f"{key}={h.get(key, float('nan')):.2f}" for key in HEADLINE)


def run(build_dir: str | Path, out: str | Path, *, config: str, strategies: list[str],
        budgets: list[int], seed: int = 0, skip_precompute: bool = False,
        heatmap_n: int = 8, model: str | None = None) -> dict:
    """Precompute (unless skipped), score, and write results, summary and heatmaps under `out`."""
    from .heatmap import draw_heatmaps

    build_dir, out = Path(build_dir), Path(out)
    needles = load_needles(build_dir)
    for name in strategies:
        make_strategy(name)  # a bad name fails before the long precompute
    cache_dir = out / "cache"
    if not skip_precompute:
        precompute(build_dir, cache_dir, config)
    try:
        cache = Cache(cache_dir)
    except CacheError as err:
        raise CacheError(f"{err}; run without --skip-precompute") from err
    scorer = None
    if model is not None:  # answer accuracy too: the frozen scorer, shown the chosen frames
        from videocfr.vlm.scorer import FrozenScorer

        scorer = FrozenScorer.tiny() if model == "tiny" else FrozenScorer.from_pretrained(model)
    rows, problems = score(cache, needles, strategies, budgets, seed, scorer, build_dir)
    for kind, items in problems.items():
        for item in items:
            log.warning("not scored (%s): %s", kind, item)
    summary = summarise(rows, problems, strategies, budgets)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(asdict(r)) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(summary, strategies, budgets))
    summary["heatmaps"] = [str(p) for p in draw_heatmaps(rows, strategies, heatmap_n,
                                                         out / "heatmaps")]
    if scorer is not None:
        summary["heatmaps"] += [str(p) for p in draw_heatmaps(
            rows, strategies, heatmap_n, out / "heatmaps", metric="correct")]
    return summary
