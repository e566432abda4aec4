"""CF-GRPO against accuracy-only GRPO in the world: two configs that differ only in λ.

What it runs (each training in its own process, `videocfr train`):

1. What `make train` reads (`make world-grpo`: the world's policy, `videocfr world policy`, and
   V-NIAH overlay haystacks of 16 and 20 s precomputed with the world CLIP, K = 16 / 20
   candidates at one per second); a held-out set beside it under ROOT/test: other lengths
   (18, 22 s), other depths, another build seed (other objects, questions, source offsets).
   Not held out: the background clips and the world's vocabulary.
2. configs/train/world.yaml with reward.cf_lambda = 5 and = 0, run.seed = each of `--seeds`,
   `--steps` steps each, nothing else changed (`cfg_overrides` below is the whole difference).
3. From every run's metrics.jsonl and completions.jsonl, per step: R_acc, r_cov (Σ_g p_g α_g:
   the trainer computes it whatever λ is), α's entropy, and α's mass on the needle's temporal
   groups (the group of the needle's candidate; from the haystacks' needles.json), with the
   prior's own mass on those groups beside it (what α would put there if it equalled the prior)
   and 1 / groups (a uniform α).
4. Held out: each final policy (and the starting policy) answers every test haystack greedily
   (" <word> <letter>", the letter scored as the trainer scores it); its α over the test
   haystack's groups gives the needle mass there too.

    python benchmarks/cfgrpo_world.py [--seeds 0,1,2] [--steps 150] [--root runs/cfgrpo-world]
    python benchmarks/cfgrpo_world.py --lambdas 5 --set reward.temporal=true --name temporal
        (T-GRPO's temporal reward on, beside the λ = 5 runs of the first call: the second ablation)

Runs whose folder holds a finished policy (final/) are read, not retrained.

Prints a Markdown table (per seed and λ: means over all steps and over the last third, held-out
accuracy and needle mass), writes ROOT/curves.png (the four quantities against step, each seed
thin, the seeds' mean thick, smoothed over 10 steps) and ROOT/results.json, and last the line
`cfgrpo_world lambda5_rcov= lambda0_rcov= lambda5_acc= lambda0_acc= seeds= rcov_above_in=
heldout5_acc= heldout0_acc= heldout_start_acc=` (training means over all steps and seeds; the
r_cov comparison counted per seed).

What it shows: whether, with the policy's own answers the only difference, adding λ·gate·r_cov
moves the frames the policy's answer tokens use (α) toward the prior and what it does to
accuracy, in a world where the prior finds the needle. What it does not show: anything about
real video or a real video LLM (a 3-layer model with one-word "reasoning"), or a tuned result
(the defaults were set once to fit the CPU budget; nothing was chosen after seeing a run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CONFIG = "configs/train/world.yaml"
TEST_GRID = ["--lengths", "18,22", "--needles", "frame,overlay", "--seed", "22", "--depths",
             ",".join(f"{(i + 0.5) / 10:.3f}" for i in range(10))]
QUANTITIES = ("accuracy", "r_cov", "alpha_entropy", "needle_mass")


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def train_side_by_side(jobs: list[tuple[Path, list[str]]], parallel: int = 2) -> None:
    """The trainings, `parallel` at a time, one thread each (the machine has two cores); each
    one's log goes to ROOT/<run name>.log."""
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    running: list[tuple[subprocess.Popen, Path]] = []
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < parallel:
            out, overrides = queue.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "videocfr", "train", "--config", CONFIG,
                   "--output-dir", str(out), *overrides]
            print("$", " ".join(cmd), flush=True)
            log = (out.parent / f"{out.name}.log").open("w")
            running.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                             stderr=subprocess.STDOUT), out))
        proc, out = running.pop(0)
        if proc.wait() != 0:
            raise SystemExit(f"training {out} failed; see {out.parent / (out.name + '.log')}")


def cfg_overrides(lam: float, seed: int, steps: int) -> list[str]:
    """The only settings the runs change: λ, the seed, the step count."""
    return [f"reward.cf_lambda={lam}", f"run.seed={seed}", f"run.max_steps={steps}"]


def per_step(run_dir: Path, groups: dict[str, list[int]], priors) -> dict[str, np.ndarray]:
    """Per-step series of one run: R_acc, r_cov, α entropy (metrics.jsonl), α's needle mass
    and the prior's own needle mass (completions.jsonl)."""
    from videocfr.vlm.alpha import group_prior

    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = {"accuracy": np.array([r["reward/accuracy"] for r in rows]),
           "r_cov": np.array([r["r_cov_mean"] for r in rows]),
           "alpha_entropy": np.array([r["alpha_entropy"] for r in rows])}
    mass: dict[int, list[float]] = {}
    prior_mass: dict[int, list[float]] = {}
    correct: dict[tuple, list[float]] = {}  # r_cov of each group's correct completions
    answers: dict[tuple, list[float]] = {}  # R_acc of each group's completions
    texts: dict[tuple, set[str]] = {}  # each group's correct completions' texts
    for line in (run_dir / "completions.jsonl").read_text().splitlines():
        c = json.loads(line)
        if c["alpha"] is None:
            continue
        g = groups[c["video_id"]]
        alpha = np.asarray(c["alpha"])
        mass.setdefault(c["step"], []).append(float(np.sum(alpha[g])))
        p = group_prior(priors.get(c["video_id"], c["question_id"]))
        prior_mass.setdefault(c["step"], []).append(float(np.sum(p[g])))
        key = (c["step"], c["video_id"], c["question_id"])
        answers.setdefault(key, []).append(c["accuracy"])
        if c["accuracy"] == 1.0:
            correct.setdefault(key, []).append(float(p @ alpha))
            texts.setdefault(key, set()).add(c["completion"])
    steps = sorted(mass)
    out["needle_mass"] = np.array([np.mean(mass[s]) for s in steps])
    out["prior_needle_mass"] = np.array([np.mean(prior_mass[s]) for s in steps])
    # what λ acts on where it acts most: how much r_cov differs between the completions of a
    # group that are all correct (elsewhere most of λ·r_cov scales the group's rewards, which
    # the std normalisation removes)
    spreads = [np.std(correct[k]) for k, v in answers.items() if min(v) == 1.0]
    out["correct_rcov_std"] = np.array([np.mean(spreads) if spreads else np.nan])
    # groups whose completions are all correct: there λ = 0 gives no advantage and λ > 0 the
    # whole of it (the std normalisation scales the small r_cov differences up to unit size)
    out["all_correct_share"] = np.array([np.mean([min(v) == 1.0 for v in answers.values()])])
    # of the groups with two or more correct completions, those whose correct texts differ
    # (only there can their α, and so their r_cov, differ)
    several = [k for k, v in correct.items() if len(v) >= 2]
    out["distinct_correct_share"] = np.array([np.mean([len(texts[k]) > 1 for k in several])])
    return out


def question_data(cache_dir: Path, build_dir: Path):
    """(needle groups per video, the cache's PriorTable) of a haystack set."""
    from videocfr.cache_format import Cache, PriorTable
    from videocfr.evaluate.vniah.build import load_needles
    from videocfr.evaluate.vniah.run import needle_positions

    cache = Cache(cache_dir)
    groups = {}
    for needle in load_needles(build_dir):
        video = cache.video(needle.video_id)
        groups[needle.video_id] = sorted({int(t) // 2 for t in
                                          needle_positions(video.timestamps, needle)})
    return groups, PriorTable.load(cache_dir)


def held_out(policy: Path, cache_dir: Path, groups, tau: float) -> dict[str, float]:
    """Greedy answers of a policy on every test haystack: accuracy (final letter) and α's
    needle mass (α of the greedy completion, as the trainer computes it)."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    from videocfr.train.data import CacheSamples, process
    from videocfr.train.world_policy import with_completion
    from videocfr.vlm.alpha import frame_usage, video_group_spans
    from videocfr.vlm.answers import answer_accuracy, completion_answer

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(policy)).eval()
    processor = AutoProcessor.from_pretrained(str(policy))
    processor.tokenizer.padding_side = "left"
    samples = CacheSamples(cache_dir, prompt="letter")
    right, mass = [], []
    with torch.inference_mode():
        for i in range(len(samples)):
            s = samples[i]
            batch = process(processor, [s])
            ids = model.generate(**batch, max_new_tokens=3, do_sample=False)
            text = processor.tokenizer.decode(ids[0, batch["input_ids"].shape[1]:],
                                              skip_special_tokens=True)
            right.append(answer_accuracy(completion_answer(text, "final-letter"), s.answer,
                                         "multiple choice", mode="final-letter"))
            completion = ids[:, batch["input_ids"].shape[1]:]
            hidden = model(**with_completion(batch, completion),
                           output_hidden_states=True).hidden_states[-1]
            spans = video_group_spans(ids, batch["video_grid_thw"], model.config.video_token_id)
            # a [B, C] mask is read as the last C positions: the completion
            alpha = frame_usage(hidden, spans, torch.ones_like(completion), tau=tau)[0]
            mass.append(float(alpha[groups[s.video_id]].sum()))
    return {"accuracy": float(np.mean(right)), "needle_mass": float(np.mean(mass)),
            "questions": len(samples)}


def plot(series: dict, out: Path, window: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(QUANTITIES), figsize=(4.2 * len(QUANTITIES), 3.4))
    kernel = np.ones(window) / window
    for ax, name in zip(axes, QUANTITIES):
        for lam, colour in (("5", "tab:red"), ("0", "tab:blue")):
            runs = [v[name] for (la, _), v in series.items() if la == lam]
            if not runs:
                continue
            smooth = [np.convolve(r, kernel, mode="valid") for r in runs]
            for r in smooth:
                ax.plot(np.arange(len(r)) + window, r, color=colour, alpha=0.25, lw=0.8)
            ax.plot(np.arange(len(smooth[0])) + window, np.mean(smooth, 0), color=colour,
                    lw=2, label=f"λ = {lam}")
        if name == "needle_mass":
            prior = np.mean([np.mean(v["prior_needle_mass"]) for v in series.values()])
            ax.axhline(prior, color="grey", ls="--", lw=1, label="prior's own")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("runs/cfgrpo-world"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lambdas", default="5,0")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more config overrides for every run of this call (e.g. "
                         "reward.temporal=true, T-GRPO's ablation); runs go to NAME-lambda*")
    ap.add_argument("--name", default="", help="prefix of this call's run folders")
    args = ap.parse_args()
    from videocfr.train.config import load_config

    cfg = load_config(ROOT / CONFIG)
    train_cache = Path(cfg.data.cache_dir)
    grpo_dir = train_cache.parent
    policy = Path(cfg.model.path)
    root = args.root if args.root.is_absolute() else ROOT / args.root
    run(["make", "-s", "world-grpo"])
    test_dir, test_cache = root / "test", root / "test-cache"
    if not (test_dir / "needles.json").is_file():
        run([sys.executable, "-m", "videocfr", "evaluate", "vniah", "build", str(test_dir),
             *TEST_GRID])
    run([sys.executable, "-m", "videocfr", "precompute", "--config",
         "configs/precompute/world.yaml", "--dataset", str(test_dir / "dataset.yaml"),
         "--out", str(test_cache)])
    groups, priors = question_data(ROOT / train_cache, ROOT / grpo_dir / "train")
    test_groups, _ = question_data(test_cache, test_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    prefix = f"{args.name}-" if args.name else ""
    series, table = {}, []
    start = held_out(ROOT / policy, test_cache, test_groups, cfg.reward.tau_alpha)
    print(f"starting policy, held out: {start}", flush=True)
    jobs = []
    for seed in seeds:
        for lam in args.lambdas.split(","):
            out = root / f"{prefix}lambda{lam}-seed{seed}"
            if not (out / "final").is_dir():
                if out.exists():
                    shutil.rmtree(out)
                jobs.append((out, cfg_overrides(float(lam), seed, args.steps) + args.set))
    train_side_by_side(jobs)
    for seed in seeds:
        for lam in args.lambdas.split(","):
            out = root / f"{prefix}lambda{lam}-seed{seed}"
            s = per_step(out, groups, priors)
            series[lam, seed] = s
            cached = out / "heldout.json"  # the held-out answers of this run's final policy
            if cached.is_file():
                held = json.loads(cached.read_text())
            else:
                held = held_out(out / "final", test_cache, test_groups, cfg.reward.tau_alpha)
                cached.write_text(json.dumps(held))
            third = len(s["accuracy"]) // 3
            row = {"lambda": lam, "seed": seed,
                   **{f"{k}_mean": float(np.nanmean(s[k])) for k in QUANTITIES},
                   **{f"{k}_last": float(np.nanmean(s[k][-third:])) for k in QUANTITIES},
                   "prior_needle_mass": float(np.mean(s["prior_needle_mass"])),
                   "correct_rcov_std": float(s["correct_rcov_std"][0]),
                   "all_correct_share": float(s["all_correct_share"][0]),
                   "distinct_correct_share": float(s["distinct_correct_share"][0]),
                   "heldout_accuracy": held["accuracy"], "heldout_needle_mass": held["needle_mass"]}
            table.append(row)
            print(json.dumps(row), flush=True)
    plot(series, root / f"{prefix}curves.png")
    groups_count = np.mean([len(priors.get(*k)) // 2 for k in priors.keys()])
    print(f"\nheld-out set: {start['questions']} haystacks (L 18, 22 s; other depths and seed); "
          f"starting policy: accuracy {start['accuracy']:.3f}, needle mass "
          f"{start['needle_mass']:.3f}; answer chance 0.25; uniform α needle mass "
          f"{1 / groups_count:.3f} (1 / mean groups); the prior's own mass on them "
          f"{np.mean([r['prior_needle_mass'] for r in table]):.3f} (training haystacks)\n")
    print("| λ | seed | acc (all / last third) | r_cov | α entropy | α needle mass | "
          "r_cov std in all-correct groups | all-correct groups | correct texts differ | "
          "held-out acc | held-out needle mass |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['lambda']} | {r['seed']} | {r['accuracy_mean']:.3f} / "
              f"{r['accuracy_last']:.3f} | {r['r_cov_mean']:.4f} / {r['r_cov_last']:.4f} | "
              f"{r['alpha_entropy_mean']:.3f} | {r['needle_mass_mean']:.4f} / "
              f"{r['needle_mass_last']:.4f} | {r['correct_rcov_std']:.4f} | "
              f"{r['all_correct_share']:.3f} | {r['distinct_correct_share']:.3f} | "
              f"{r['heldout_accuracy']:.3f} | "
              f"{r['heldout_needle_mass']:.4f} |")
    by = {lam: [r for r in table if r["lambda"] == lam] for lam in ("5", "0")}
    result_set = {"set": args.set}
    above = sum(a["r_cov_mean"] > b["r_cov_mean"] for a, b in zip(by["5"], by["0"]))
    result = {"rows": table, "start": start, "seeds": seeds, "steps": args.steps, **result_set}
    (root / f"{prefix}results.json").write_text(json.dumps(result, indent=1))
    if not (by["5"] and by["0"]):
        return

    def mean(lam, key):
        return float(np.mean([r[key] for r in by[lam]]))

    print(f"cfgrpo_world lambda5_rcov={mean('5', 'r_cov_mean'):.4f} "
          f"lambda0_rcov={mean('0', 'r_cov_mean'):.4f} "
          f"lambda5_acc={mean('5', 'accuracy_mean'):.3f} "
          f"lambda0_acc={mean('0', 'accuracy_mean'):.3f} seeds={len(seeds)} "
          f"rcov_above_in={above}/{len(seeds)} "
          f"heldout5_acc={mean('5', 'heldout_accuracy'):.3f} "
          f"heldout0_acc={mean('0', 'heldout_accuracy'):.3f} "
          f"heldout_start_acc={start['accuracy']:.3f}")


if __name__ == "__main__":
    main()
