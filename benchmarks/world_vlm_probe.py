"""Where the world VLM's training stands: its two halves probed apart (docs/world.md).

The world VLM (a config-built Qwen2.5-VL, `vlm.tiny.SHAPES["world"]`) answers at chance after
its curriculum. Its task needs two skills; this probe trains each alone, on the model's own
modules:

- `vision`: the world VLM's vision tower (Qwen2.5-VL's ViT: 14 px patches, temporal groups of
  two frames, 2 x 2 merge) + a linear head on the max over its merged tokens, supervised with
  the 4-way shape of one object (`world_shape_probe`'s frames: the world's size 0.18 on a real
  clip frame), batches of 12, AdamW 5e-4 with 100 warm-up steps. Run at the processor budget
  the world VLM uses now (84 x 168 px: an object spans about one patch) and at twice the
  resolution (168 x 308 px: two to three patches), with or without a size curriculum (objects
  shrink from 0.45 to 0.18 over the first half).
- `letters`: the language model alone on the letter lookup without vision, through the world
  VLM trainer's letter stage (`train.world_vlm.letter_stage`): the scorer's letter prompt
  (`vlm.scorer.letter_prompt`) with the answer given as a hint in the question ("What colour is
  the triangle? Hint: red."), text only, loss on the four letters' logits alone, batches of 64;
  the running training accuracy (every sample is new);
- `letters_match`: the same stage as the trainer runs it: batches of 32 plus the option-match
  loss — each option's word position asked whether it is the answer — which splits the two-hop
  lookup into two one-hop parts.

- `vision_stage`: the trainer's own vision stage (`train.world_vision.VisionStage`: word-tied
  per-token colour and shape labels, 56 px crops, then crops and full frames alternated) on a
  fresh world VLM, scored on 48 held-out two-frame samples: shape accuracy at the tokens under
  objects' centres (its colour accuracy is printed beside it);
- `vision_crops_only`: the same stage without the full-frame part (what crops alone transfer).

Chance is 0.25 for all. The last line:

    world_vlm_probe vision_84= vision_168= vision_168_curriculum= letters= letters_match=
        vision_stage= vision_crops_only= chance=0.25

A probe that stays at chance here is why the VLM does; one that learns says what its stage
needs (steps, resolution, curriculum).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MIN_SIZE = 0.18


def vision(steps: int, budget: int, curriculum: bool, seed: int = 0) -> float:
    """Held-out shape accuracy of the world VLM's vision tower after `steps` batches."""
    import torch
    import torch.nn.functional as F
    from transformers import Qwen2VLVideoProcessor
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VisionTransformerPretrainedModel,
    )
    from transformers.video_utils import VideoMetadata
    from videocfr.vlm.tiny import tiny_config
    from videocfr.world.frames import Backgrounds
    from world_shape_probe import _frames

    torch.manual_seed(seed)
    proc = Qwen2VLVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=2,
                                 size={"shortest_edge": int(budget * 0.8),
                                       "longest_edge": budget}, cap_pixels_per_frame=True)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(
        tiny_config(shape="world").vision_config)
    head = torch.nn.Linear(tower.config.out_hidden_size, 4)
    params = list(tower.parameters()) + list(head.parameters())

    def forward(frames):
        videos = [np.stack([f, f]) for f in frames]
        meta = [VideoMetadata(total_num_frames=2, fps=1.0, frames_indices=[0, 1])] * len(videos)
        x = proc(videos=videos, video_metadata=meta, do_sample_frames=False, return_tensors="pt")
        out = tower(x["pixel_values_videos"], grid_thw=x["video_grid_thw"]).pooler_output
        parts = torch.split(out, (x["video_grid_thw"].prod(-1) // 4).tolist())
        return head(torch.stack([p.amax(0) for p in parts]))

    backgrounds = Backgrounds(size=(160, 90))
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    rng = np.random.default_rng(seed)
    test_x, test_y = _frames(np.random.default_rng(9), backgrounds, 96, MIN_SIZE, False)
    for step in range(steps):
        size = MIN_SIZE
        if curriculum:
            size = 0.45 + (MIN_SIZE - 0.45) * min(1.0, step / (0.5 * steps))
        x, y = _frames(rng, backgrounds, 12, size, False)
        loss = F.cross_entropy(forward(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    tower.eval()
    with torch.inference_mode():
        return float((forward(test_x).argmax(-1).numpy() == test_y).mean())


def letters(steps: int, batch: int, lr: float, match_weight: float, seed: int = 0) -> float:
    """The world VLM trainer's letter stage (`train.world_vlm.letter_stage`) on a fresh model,
    with or without the option-match loss: training accuracy over its last 100 steps."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from videocfr.train.world_vlm import LetterStage, letter_stage, world_processor
    from videocfr.vlm.tiny import tiny_config

    torch.manual_seed(seed)
    tok = world_processor(seed).tokenizer
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(tok, "world"))
    head = torch.nn.Linear(model.config.text_config.hidden_size, 1)
    figures = letter_stage(model, head, tok, np.random.default_rng(seed),
                           LetterStage(steps, batch, lr), match_weight=match_weight)
    return figures["train_accuracy_last100"]


def vision_stage(crop_steps: int, frame_steps: int, seed: int = 0) -> float:
    """Held-out per-token shape accuracy after the trainer's vision stage on a fresh world VLM."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from videocfr.train.world_vision import VisionStage, WordHead, evaluate_tokens
    from videocfr.train.world_vision import vision_stage as run_stage
    from videocfr.train.world_vlm import world_processor
    from videocfr.vlm.tiny import tiny_config
    from videocfr.world.frames import Backgrounds
    from videocfr.world.samples import video_qa

    torch.manual_seed(seed)
    processor = world_processor(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(processor.tokenizer, "world"))
    head = WordHead(model, processor.tokenizer)
    backgrounds = Backgrounds(size=(224, 126))
    run_stage(model, head, processor, backgrounds, np.random.default_rng(seed),
              VisionStage(crop_steps=crop_steps, frame_steps=frame_steps),
              lambda r: video_qa(r, backgrounds, 2))
    held_out = np.random.default_rng(seed + 99)
    tokens = evaluate_tokens(model, head, processor,
                             [video_qa(held_out, backgrounds, 2) for _ in range(48)])
    print(f"  held out: colour {tokens['colour']:.3f} shape {tokens['shape']:.3f} "
          f"({tokens['objects']} objects)", flush=True)
    return tokens["shape"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vision-steps", type=int, default=2000)
    ap.add_argument("--letter-steps", type=int, default=900)
    ap.add_argument("--letter-lr", type=float, default=2e-3)
    ap.add_argument("--match-steps", type=int, default=600)
    ap.add_argument("--crop-steps", type=int, default=2000)
    ap.add_argument("--frame-steps", type=int, default=1000)
    ap.add_argument("--parts",
                    default="vision_84,vision_168,vision_168_curriculum,letters,letters_match,"
                            "vision_stage,vision_crops_only")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    runs = {
        "vision_84": lambda: vision(args.vision_steps, 28 * 28 * 18, False),
        "vision_168": lambda: vision(args.vision_steps, 28 * 28 * 70, False),
        "vision_168_curriculum": lambda: vision(args.vision_steps, 28 * 28 * 70, True),
        "letters": lambda: letters(args.letter_steps, 64, args.letter_lr, match_weight=0.0),
        "letters_match": lambda: letters(args.match_steps, 32, 2e-3, match_weight=1.0),
        "vision_stage": lambda: vision_stage(args.crop_steps, args.frame_steps),
        "vision_crops_only": lambda: vision_stage(args.crop_steps, 0),
    }
    acc = {}
    for part in args.parts.split(","):
        start = time.perf_counter()
        acc[part] = runs[part]()
        print(f"{part}: {acc[part]:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    print("world_vlm_probe " + " ".join(
        f"{k}={acc.get(k, math.nan):.3f}" for k in runs) + " chance=0.25")


if __name__ == "__main__":
    main()
