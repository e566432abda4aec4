"""`videocfr evaluate qa`: QA accuracy under frame-selection strategies and frame budgets.

    videocfr evaluate qa --data EVAL.json --cache CACHE --model PATH|tiny \
        --strategies uniform,prior-topn --budgets 4,8,16,32 [--mode logits|generate] -o OUT

The eval file is Video-R1's format (`problem_id, problem, options, solution "<answer>B</answer>",
problem_type, data_type, path`; its MVBench / Video-MME / VSI-Bench files parse unchanged) or the
native `{video_id, question_id, ...}` records. Each record is looked up in the cache by the key
precompute gave it; every strategy picks n of the video's K candidates, the frames are decoded at
their cached indices, and the frozen scorer answers:

- `logits` (default): the option letter with the highest logit (multiple choice only);
- `generate`: the trainer's Video-R1 prompt, scored by the trainer's reward functions.

Per-sample results go to OUT/samples.jsonl, one flushed line each: it is the resume state (a rerun
skips the samples done). OUT/summary.json and OUT/summary.md hold accuracy per problem type and
overall with 95% bootstrap intervals, and every item that could not be scored, by reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from videocfr.cache_format import Cache, CacheError
from videocfr.cache_format.keys import is_image_record, video_r1_key
from videocfr.vlm.decoders import cache_decoder
from videocfr.vlm.scorer import FrozenScorer, ScoreItem

from .focus import focus
from .frames import load_frames, video_root
from .strategies import make_strategy, sample_rng, select

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalRecord:
    video_id: str
    question_id: str
    problem_type: str
    answer: str


def read_eval(path: str | Path) -> tuple[list[EvalRecord], dict[str, list[str]]]:
    """Records of an eval file, and the items skipped by reason (image records, malformed)."""
    from videocfr.vlm.answers import parse_solution

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(records, list):
        raise ValueError(f"{path} must hold a JSON list (or JSONL) of records")
    out, skipped = [], defaultdict(list)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            skipped["malformed"].append(f"record {i}: not an object")
            continue
        if "problem_id" in rec:
            if is_image_record(rec):
                skipped["image_record"].append(f"record {i} (problem_id {rec['problem_id']}): "
                                               f"an image record, no video to select from")
                continue
            try:
                vid, qid = video_r1_key(rec)
                answer = parse_solution(str(rec["solution"]))
            except KeyError as err:
                skipped["malformed"].append(f"record {i}: field {err} missing")
                continue
        elif "video_id" in rec and "question_id" in rec:
            vid, qid, answer = str(rec["video_id"]), str(rec["question_id"]), str(
                rec.get("answer", ""))
        else:
            skipped["malformed"].append(f"record {i}: neither Video-R1 nor native fields")
            continue
        out.append(EvalRecord(vid, qid, str(rec.get("problem_type") or "multiple choice"),
                              answer))
    return out, dict(skipped)


def bootstrap_ci(values: np.ndarray, seed: int = 0, rounds: int = 1000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (deterministic for a seed)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (rounds, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _done(path: Path) -> dict[tuple, dict]:
    """Samples already scored; a line cut by a kill is dropped from the file (and redone)."""
    done, broken = {}, False
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                done[(row["video_id"], row["question_id"], row["strategy"], row["n"])] = row
            except (ValueError, KeyError, TypeError):
                broken = True
        if broken or not path.read_bytes().endswith(b"\n"):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
            tmp.replace(path)
    return done


def evaluate(records: list[EvalRecord], cache: Cache, scorer: FrozenScorer,
             strategies: list[str], budgets: list[int], out: Path, *, mode: str = "logits",
             root: Path | None = None, seed: int = 0,
             skipped: dict[str, list[str]] | None = None, with_focus: bool = False,
             max_new_tokens: int = 256) -> dict:
    """Score every (record, strategy, n); resumable through OUT/samples.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    samples = out / "samples.jsonl"
    done = _done(samples)
    problems: dict[str, list[str]] = defaultdict(list, {k: list(v) for k, v in
                                                        (skipped or {}).items()})
    fns = {name: make_strategy(name) for name in strategies}
    root = root if root is not None else video_root(cache)
    decoder = cache_decoder(cache.config)  # the frames the prior was computed on
    with open(samples, "a", encoding="utf-8") as sink:
        for rec in tqdm(records, desc="evaluate qa", unit="question"):
            try:
                video = cache.video(rec.video_id)
                question = cache.question(rec.video_id, rec.question_id)
            except KeyError as err:
                reason = "failed_video" if "failed" in str(err) else "missing_from_cache"
                problems[reason].append(f"{rec.video_id}/{rec.question_id}: "
                                        f"{err.args[0] if err.args else err}")
                continue
            for name, fn in fns.items():
                for n in budgets:
                    key = (rec.video_id, rec.question_id, name, n)
                    if key in done:
                        continue
                    if n > video.num_sampled:
                        problems["budget_over_k"].append(f"{rec.video_id}/{rec.question_id}: "
                                                         f"n={n} > K={video.num_sampled}")
                        continue
                    rng = sample_rng(seed, n, rec.video_id, rec.question_id)
                    pos = select(fn, video, question, n, rng)
                    frames, ts = load_frames(root, video, pos, decoder=decoder)
                    item = ScoreItem(frames, question.question, question.options, rec.answer,
                                     rec.problem_type, ts)
                    row = {"video_id": rec.video_id, "question_id": rec.question_id,
                           "strategy": name, "n": n, "problem_type": rec.problem_type,
                           "positions": pos.tolist()}
                    if mode == "logits":
                        z = scorer.option_logits([item])[0]
                        pred = item.letters()[int(np.argmax(z))]
                        row.update(prediction=pred, correct=float(pred == rec.answer.strip()),
                                   margin=float(scorer.margins([item])[0]))
                    else:
                        texts, acc = scorer.generate_scores([item], max_new_tokens)
                        row.update(prediction=texts[0], correct=float(acc[0]))
                    if with_focus:  # where the model looks when it answers (evaluate/focus.py)
                        row.update(focus(scorer, item, question.prior, pos))
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    done[key] = row
    return summarise(list(done.values()), problems, strategies, budgets, seed)


def summarise(rows: list[dict], problems: dict, strategies: list[str], budgets: list[int],
              seed: int = 0) -> dict:
    acc = {}
    for s in strategies:
        for n in budgets:
            sel = [r for r in rows if r["strategy"] == s and r["n"] == n]
            groups = defaultdict(list)
            for r in sel:
                groups[r["problem_type"]].append(r["correct"])
                groups["overall"].append(r["correct"])
            for group, vals in groups.items():
                lo, hi = bootstrap_ci(np.array(vals), seed)
                acc[f"{s}|{n}|{group}"] = {"accuracy": float(np.mean(vals)), "ci95": [lo, hi],
                                           "count": len(vals)}
            for metric in ("alpha_entropy", "r_cov"):
                vals = [r[metric] for r in sel if np.isfinite(r.get(metric, np.nan))]
                if vals:
                    acc[f"{s}|{n}|overall"][metric] = float(np.mean(vals))
    return {"accuracy": acc, "problems": {k: len(v) for k, v in problems.items()},
            "problem_items": dict(problems)}


def markdown(summary: dict) -> str:
    lines = ["# QA accuracy", "",
             "| strategy | n | group | accuracy | 95% CI | count | α entropy | r_cov |",
             "|---|---|---|---|---|---|---|---|"]
    for key, v in sorted(summary["accuracy"].items()):
        s, n, group = key.split("|")
        extra = " | ".join(f"{v[m]:.3f}" if m in v else "" for m in ("alpha_entropy", "r_cov"))
        lines.append(f"| {s} | {n} | {group} | {v['accuracy']:.3f} | "
                     f"{v['ci95'][0]:.3f}–{v['ci95'][1]:.3f} | {v['count']} | {extra} |")
    if summary["problems"]:
        lines += ["", "Not scored: " + ", ".join(f"{k} {v}" for k, v in
                                                   summary["problems"].items())]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videocfr evaluate qa", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="Video-R1 eval JSON/JSONL (or native records)")
    p.add_argument("--cache", required=True)
    p.add_argument("--model", required=True, help="a local Qwen2.5-VL checkpoint, or 'tiny'")
    p.add_argument("--strategies", default="uniform,prior-topn")
    p.add_argument("--budgets", default="4,8,16,32")
    p.add_argument("--mode", choices=("logits", "generate"), default="logits")
    p.add_argument("--video-root", default=None)
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length (generate)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--focus", action="store_true",
                   help="also report the model's frame usage: alpha entropy and r_cov")
    p.add_argument("-o", "--out", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        records, skipped = read_eval(args.data)
        cache = Cache(args.cache)
        strategies = args.strategies.split(",")
        for name in strategies:
            make_strategy(name)
        budgets = [int(x) for x in args.budgets.split(",")]
        scorer = (FrozenScorer.tiny(batch_size=args.batch_size) if args.model == "tiny" else
                  FrozenScorer.from_pretrained(args.model, batch_size=args.batch_size))
        out = Path(args.out)
        summary = evaluate(records, cache, scorer, strategies, budgets, out, mode=args.mode,
                           root=None if args.video_root is None else Path(args.video_root),
                           seed=args.seed, skipped=skipped, with_focus=args.focus,
                           max_new_tokens=args.max_new_tokens)
    except (ValueError, KeyError, OSError, CacheError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    for reason, items in summary["problem_items"].items():
        for item in items[:5]:
            print(f"not scored ({reason}): {item}", file=sys.stderr)
    return 0
