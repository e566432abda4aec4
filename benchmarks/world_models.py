"""The world models through the project's real load paths (METHOD §9), against controls.

    python benchmarks/world_models.py [--root caches/world] [--seed 0] [--haystacks 60]

- CLIP (precompute.clip.ClipEmbedder with `pretrained: <file>`, precompute.saliences): on
  held-out 16-frame shots where every frame holds 1-2 distractors and one frame holds the needle
  (the asked object; distractors never share the asked key), the semantic salience
  (max over global + patch views and over the question's queries) puts the needle frame first
  how often; beside it the same with random CLIP weights (the control) and chance 1/16.
- VLM (vlm.scorer.FrozenScorer.from_pretrained): option-letter accuracy at n = 4 and 8
  frames with the needle frame among them and without it; chance 1/4.

A world result is evidence about the mechanism, not a benchmark number.
Last line: `world clip_top1= clip_random_top1= chance16= vlm4_needle= vlm4_none= vlm8_needle=
vlm8_none= chance4=`.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from videocfr.precompute.clip import WORLD_CLIP, ClipEmbedder
from videocfr.precompute.saliences import semantic_queries, semantic_raw
from videocfr.world import artifacts
from videocfr.world.captions import distractor_exclude, make_question
from videocfr.world.frames import Backgrounds
from videocfr.world.objects import draw_all, sample_object, sample_objects


def needle_shot(rng: np.random.Generator, backgrounds: Backgrounds, k: int = 16):
    """uint8 [k, H, W, 3] frames, the question, the needle's frame (distractors everywhere)."""
    target = sample_object(rng)
    q = make_question(rng, target)
    exclude = distractor_exclude(target, q.asked)
    at = int(rng.integers(k))
    frames = backgrounds.shot(rng, k)
    out = []
    for i in range(k):
        objs = sample_objects(rng, int(rng.integers(1, 3)), exclude=exclude,
                              avoid=[target] if i == at else [])
        out.append(draw_all(frames[i], objs + ([target] if i == at else [])))
    return np.stack(out), q, at


def clip_top1(embedder: ClipEmbedder, shots) -> float:
    """Fraction of shots whose highest semantic salience is the needle frame."""
    hits = 0
    for frames, q, at in shots:
        glob, patches = embedder.embed_images(frames)
        text = embedder.embed_texts(semantic_queries(q.question, q.options))
        hits += int(np.argmax(semantic_raw(glob, patches, text)) == at)
    return hits / len(shots)


def vlm_accuracy(scorer, rng, backgrounds, n: int, count: int, needle: bool) -> float:
    from videocfr.vlm.scorer import ScoreItem
    from videocfr.world.samples import video_qa

    items = []
    for _ in range(count):
        s = video_qa(rng, backgrounds, n, needle=needle, distractors=(0, 2))
        items.append(ScoreItem(s.frames, s.question.question, s.question.options,
                               s.question.answer))
    z = scorer.option_logits(items)
    return float(np.mean([int(np.argmax(zi)) == "ABCD".index(it.answer)
                          for zi, it in zip(z, items)]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(artifacts.DEFAULT_ROOT))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--haystacks", type=int, default=60, help="held-out shots for the CLIP")
    p.add_argument("--questions", type=int, default=200, help="held-out questions per VLM cell")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    clip_path = artifacts.clip_checkpoint(args.root, args.seed)
    vlm_path = artifacts.vlm_checkpoint(args.root, args.seed)
    rng = np.random.default_rng([args.seed, 12345])  # a stream no training run draws from
    shots = [needle_shot(rng, Backgrounds(size=(320, 180))) for _ in range(args.haystacks)]
    trained = clip_top1(ClipEmbedder(WORLD_CLIP, str(clip_path)), shots)
    random_w = clip_top1(ClipEmbedder(WORLD_CLIP, "none"), shots)
    print(f"clip needle-first rate over {args.haystacks} shots of 16 frames: world {trained:.3f}, "
          f"random weights {random_w:.3f}, chance {1 / 16:.3f}")
    from videocfr.vlm.scorer import FrozenScorer

    scorer = FrozenScorer.from_pretrained(vlm_path, batch_size=16)
    bg = Backgrounds(size=(320, 180))
    acc = {(n, k): vlm_accuracy(scorer, rng, bg, n, args.questions, k)
           for n in (4, 8) for k in (True, False)}
    for n in (4, 8):
        print(f"vlm n={n}: needle among the frames {acc[n, True]:.3f}, needle left out "
              f"{acc[n, False]:.3f}, chance 0.250 ({args.questions} questions each)")
    print(f"world clip_top1={trained:.3f} clip_random_top1={random_w:.3f} chance16={1 / 16:.3f} "
          f"vlm4_needle={acc[4, True]:.3f} vlm4_none={acc[4, False]:.3f} "
          f"vlm8_needle={acc[8, True]:.3f} vlm8_none={acc[8, False]:.3f} chance4=0.250")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
