"""Run V-NIAH: precompute the haystacks, then score every frame-selection strategy.

For each haystack, each strategy chooses n of the cache's K candidate frames; it hits when one of
them lies inside the needle's span (no model needed: the needle is found or it is not). Every hit
rate stands beside the chance rate of that haystack (`build.chance_hit_rate`: n of K drawn at
random, m needle candidates) and, with `control_config`, beside the same prior strategies on a
second cache of the same haystacks made with that config (random CLIP weights: the semantic
signal removed). The prior mass on the needle's candidates tells how much of the consensus prior
the needle holds. With a model, the chosen frames are shown to it and its answer is scored.
Results: `results.jsonl` (one row per haystack × strategy × n), `summary.json`, `summary.md`
and heatmaps.
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
from .build import Needle, chance_hit_rate, load_needles

log = logging.getLogger(__name__)

# The figure line: hit rates at n = 8 on overlay needles (both haystack kinds) and, with a model,
# answer accuracy there; `prior_random_clip` is prior-topn on the control cache.
HEADLINE = {"uniform": "uniform", "random": "random", "novelty": "novelty",
            "prior": "prior-topn"}
DEFAULT_STRATEGIES = ("uniform", "random", "novelty", "prior-topn", "prior-shuffled",
                      "prior-topn@cfr:w_semantic=0", "prior-topn@cfr-novelty", "prior-its",
                      "bolt-its", "scene-reps", "aks")
CONTROL_STRATEGIES = ("prior-topn", "bolt-its")  # rerun on the control cache
DEFAULT_ANSWER_STRATEGIES = ("uniform", "random", "prior-topn", "prior-shuffled")
DEFAULT_ANSWER_BUDGETS = (4, 8)
DEFAULT_BUDGETS = (4, 8, 16, 32)
CONTROL = "~random-clip"  # suffix of a strategy scored on the control cache


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
    chance: float = float("nan")  # 1 - C(K - m, n) / C(K, n) for this haystack
    k: int = 0
    m: int = 0


def score(cache: Cache, needles: list[Needle], strategies: list[str], budgets: list[int],
          seed: int = 0, scorer=None, video_root: Path | None = None, suffix: str = "",
          answer: tuple[set, set] | None = None) -> tuple[list[Row], dict[str, list[str]]]:
    """Hit rows for every (haystack, strategy, n), and the items that could not be scored.

    With a scorer (vlm.scorer.FrozenScorer), the model is also shown the chosen frames
    (decoded at their cached indices under `video_root`) and `correct` says whether the option
    with the highest logit is the needle's answer — for the (strategies, budgets) in `answer`
    (default: all). `suffix` is appended to the strategy names of the rows (control caches).
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
        for name, fn in fns.items():
            for n in budgets:
                if n > video.num_sampled:
                    problems["budget_over_k"].append(
                        f"{needle.video_id}: n={n} > K={video.num_sampled} ({name})")
                    continue
                rng = np.random.default_rng([seed, n, zlib.crc32(needle.video_id.encode())])
                pos = select(fn, video, question, n, rng)
                correct = None
                if scorer is not None and (answer is None or (name in answer[0]
                                                              and n in answer[1])):
                    correct = answer_correct(scorer, video, question, pos, video_root,
                                             cache_decoder(cache.config))
                rows.append(needle_row(needle, video, question, name + suffix, n, pos, truth,
                                       correct))
    return rows, dict(problems)


def needle_row(needle: Needle, video, question, strategy: str, n: int, pos: np.ndarray,
               truth: np.ndarray, correct: float | None) -> Row:
    """The Row of one choice of candidates `pos` at budget n in a haystack whose needle covers
    `truth` (`needle_positions`): its hit, the prior's mass on the needle, the answer's
    correctness (None: not asked) and the exact chance of n random candidates."""
    k = video.num_sampled
    mass = float(np.asarray(question.prior, np.float64)[truth].sum())
    return Row(needle.video_id, needle.haystack, needle.needle, needle.length_s, needle.depth,
               strategy, n, bool(np.isin(pos, truth).any()), mass, correct,
               chance_hit_rate(k, int(truth.size), n), k, int(truth.size))


def answer_correct(scorer, video, question, pos: np.ndarray, video_root: Path,
                   decoder: str = "decord") -> float:
    """1.0 when the scorer, shown the candidates `pos` (decoded under `video_root`), puts its
    highest option logit on the question's answer, else 0.0."""
    from videocfr.vlm.scorer import ScoreItem

    from ..frames import load_frames

    frames, ts = load_frames(video_root, video, pos, decoder=decoder,
                             flag="BUILD_DIR (the `vniah build` output)")
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


def mean_of(rows: list[Row], field: str, **match) -> float:
    """Mean of `field` over the rows whose fields equal `match` (nan when none)."""
    vals = [getattr(r, field) for r in rows if getattr(r, field) is not None
            and all(getattr(r, k) == v for k, v in match.items())]
    return float(np.mean(vals)) if vals else float("nan")


def summarise(rows: list[Row], problems: dict[str, list[str]], strategies: list[str],
              budgets: list[int]) -> dict:
    kinds = sorted({(r.haystack, r.needle) for r in rows})
    names = list(dict.fromkeys([*strategies, *(r.strategy for r in rows)]))
    table = {f"{s}|{n}|{h}|{k}": hit_rate(rows, strategy=s, n=n, haystack=h, needle=k)
             for s in names for n in budgets for h, k in kinds}
    chance = {f"{n}|{h}|{k}": mean_of(rows, "chance", strategy=names[0], n=n, haystack=h,
                                       needle=k) for n in budgets for h, k in kinds}
    masses = {f"{h}|{k}": float(np.mean([r.prior_mass for r in rows
                                         if (r.haystack, r.needle) == (h, k)]))
              for h, k in kinds}
    answered = {f"{s}|{n}|{h}|{k}": acc for s in names for n in budgets for h, k in kinds
                if np.isfinite(acc := accuracy(rows, strategy=s, n=n, haystack=h, needle=k))}
    return {"hit_rate": table, "chance": chance, "accuracy": answered,
            "figure": figure(rows), "prior_mass_on_needle": masses,
            "haystacks": len({r.video_id for r in rows}),
            "problems": {k: len(v) for k, v in problems.items()}, "problem_items": problems}


def figure(rows: list[Row], n: int = 8, needle: str = "overlay") -> dict[str, float]:
    """The figure line's numbers: n = 8, overlay needles of both haystack kinds."""
    out = {"chance": mean_of(rows, "chance", strategy="uniform", n=n, needle=needle)}
    for key, name in HEADLINE.items():
        out[key] = hit_rate(rows, strategy=name, n=n, needle=needle)
    out["prior_random_clip"] = hit_rate(rows, strategy="prior-topn" + CONTROL, n=n,
                                        needle=needle)
    out["qa_uniform"] = accuracy(rows, strategy="uniform", n=n, needle=needle)
    out["qa_prior"] = accuracy(rows, strategy="prior-topn", n=n, needle=needle)
    return out


def markdown(summary: dict, strategies: list[str], budgets: list[int]) -> str:
    kinds = sorted({tuple(key.split("|")[2:]) for key in summary["hit_rate"]})
    names = list(dict.fromkeys(key.split("|")[0] for key in summary["hit_rate"]))
    head = "| strategy | " + " | ".join(f"{h}/{k}" for h, k in kinds) + " |"
    lines = ["# V-NIAH needle hit rate", "",
             "chance: the exact hit rate of n random candidates, 1 - C(K - m, n) / C(K, n), "
             "averaged over the haystacks; `~random-clip`: the control cache (random CLIP "
             "weights, same haystacks)."]
    for n in budgets:
        lines += ["", f"n = {n}", "", head, "|" + "---|" * (1 + len(kinds))]
        lines.append("| **chance** | " + " | ".join(
            f"{summary['chance'].get(f'{n}|{h}|{k}', float('nan')):.3f}" for h, k in kinds)
            + " |")
        for s in names:
            vals = [summary["hit_rate"].get(f"{s}|{n}|{h}|{k}", float("nan")) for h, k in kinds]
            lines.append(f"| {s} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    if summary["accuracy"]:
        lines += ["", "# Answer accuracy (the model shown the chosen frames)", ""]
        budgets_acc = sorted({int(key.split("|")[1]) for key in summary["accuracy"]})
        for n in budgets_acc:
            lines += [f"n = {n}", "", head, "|" + "---|" * (1 + len(kinds))]
            for s in names:
                vals = [summary["accuracy"].get(f"{s}|{n}|{h}|{k}") for h, k in kinds]
                if any(v is not None for v in vals):
                    lines.append(f"| {s} | " + " | ".join(
                        "" if v is None else f"{v:.2f}" for v in vals) + " |")
            lines.append("")
    lines += ["", "Prior mass on the needle's candidates (cached prior): " + ", ".join(
        f"{k} {v:.3f}" for k, v in summary["prior_mass_on_needle"].items())]
    if summary["problems"]:
        lines += ["", "Not scored: " + ", ".join(f"{k} {v}" for k, v in
                                                   summary["problems"].items())]
    return "\n".join(lines) + "\n"


def figure_line(summary: dict) -> str:
    f = summary["figure"]
    return "vniah_world n=8 " + " ".join(f"{key}={f.get(key, float('nan')):.2f}" for key in (
        "chance", "uniform", "random", "novelty", "prior", "prior_random_clip", "qa_uniform",
        "qa_prior"))


def run(build_dir: str | Path, out: str | Path, *, config: str, strategies: list[str],
        budgets: list[int], seed: int = 0, skip_precompute: bool = False,
        heatmap_n: int = 8, model: str | None = None, control_config: str | None = None,
        answer_strategies: list[str] | None = None,
        answer_budgets: list[int] | None = None) -> dict:
    """Precompute (unless skipped), score, and write results, summary and heatmaps under `out`.

    control_config: a second precompute config for the same haystacks (e.g. the same CLIP with
        random weights); CONTROL_STRATEGIES are scored on that cache too, named `...~random-clip`.
    answer_strategies, answer_budgets: with a model, which (strategy, n) it answers (default:
        DEFAULT_ANSWER_STRATEGIES present in `strategies`, DEFAULT_ANSWER_BUDGETS).
    """
    from .heatmap import draw_heatmaps

    build_dir, out = Path(build_dir), Path(out)
    needles = load_needles(build_dir)
    for name in strategies:
        make_strategy(name)  # a bad name fails before the long precompute
    caches = {"": (out / "cache", config)}
    if control_config is not None:
        caches[CONTROL] = (out / "cache_control", control_config)
    opened = {}
    for suffix, (cache_dir, cfg) in caches.items():
        if not skip_precompute:
            precompute(build_dir, cache_dir, cfg)
        try:
            opened[suffix] = Cache(cache_dir)
        except CacheError as err:
            raise CacheError(f"{err}; run without --skip-precompute") from err
    scorer = None
    if model is not None:  # answer accuracy too: the frozen scorer, shown the chosen frames
        from videocfr.vlm.scorer import FrozenScorer

        scorer = FrozenScorer.load(model)
    answer = (set(answer_strategies or [s for s in DEFAULT_ANSWER_STRATEGIES
                                        if s in strategies]),
              set(answer_budgets or DEFAULT_ANSWER_BUDGETS))
    rows, problems = score(opened[""], needles, strategies, budgets, seed, scorer, build_dir,
                           answer=answer)
    if CONTROL in opened:
        more, more_problems = score(opened[CONTROL], needles,
                                    [s for s in CONTROL_STRATEGIES if s in strategies], budgets,
                                    seed, suffix=CONTROL)
        rows += more
        for kind, items in more_problems.items():
            problems.setdefault(kind, []).extend(items)
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
    names = list(dict.fromkeys(r.strategy for r in rows))
    summary["heatmaps"] = [str(p) for p in draw_heatmaps(rows, names, heatmap_n,
                                                         out / "heatmaps")]
    if scorer is not None:
        summary["heatmaps"] += [str(p) for p in draw_heatmaps(
            rows, [s for s in names if s in answer[0]], heatmap_n, out / "heatmaps",
            metric="correct")]
    return summary
