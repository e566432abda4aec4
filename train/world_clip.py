"""Train the world's tiny CLIP (METHOD §9) with open_clip's contrastive loss.

Two `open_clip.ClipLoss` terms: the usual one on the pooled image embedding, and the same loss on
the best-matching per-location token (`TokenMaxClipLoss`), since precompute's semantic salience
takes the max over the pooled embedding and the tokens (METHOD §2) and both views must live in
the text's space. The views are `vlm.clip_views.image_views`, the ones precompute's embedder
stores. Data: `world.clip.clip_batch`, with a size curriculum (objects shrink from half the frame
to the world's sizes while distractors and all caption forms come in).

The checkpoint is a torch file `{"state_dict", "world"}` that `open_clip.create_model(name,
pretrained=<file>)` loads as it is (precompute's `pretrained: <file>` path); `world` records the
generator version, seed and training figures, checked by `world.artifacts.check_checkpoint`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from videocfr.vlm import clip_views
from videocfr.world.clip import NAMES, clip_batch, register_world_clip, to_pixels
from videocfr.world.frames import Backgrounds
from videocfr.world.objects import SIZE_RANGE, WORLD_VERSION, draw_all, sample_object

log = logging.getLogger(__name__)


def image_views(model, pixels):
    """(pooled [B, D], tokens [B, T, D]) in the joint space, L2-normalised
    (`vlm.clip_views.image_views`, precompute's views)."""
    import torch.nn.functional as F

    pooled, tokens = clip_views.image_views(model.visual, pixels)
    return F.normalize(pooled, dim=-1), F.normalize(tokens, dim=-1)


def token_max_loss_class():
    """`TokenMaxClipLoss`: open_clip's ClipLoss whose image-text logit is the best patch's."""
    from open_clip.loss import ClipLoss

    class TokenMaxClipLoss(ClipLoss):
        """ClipLoss on s_ij = scale · max over patches p of cos(patch_ip, text_j)."""

        def get_logits(self, image_features, text_features, logit_scale, logit_bias=None):
            # image_features (B, T, D), text_features (B, D), both normalised
            sims = (image_features @ text_features.T.unsqueeze(0)).amax(dim=1)  # (B, B)
            logits_per_image = logit_scale * sims
            return logits_per_image, logits_per_image.T

    return TokenMaxClipLoss


@dataclass(frozen=True)
class ClipTrainConfig:
    """How the world CLIP is trained.

    Args:
        steps: optimiser steps.
        batch: named objects per contrastive batch (<= 12: half the names stay distractors').
        lr: AdamW peak learning rate (warmup 5% then cosine to 0).
        weight_decay: AdamW weight decay.
        frame_size: (W, H) of the generated frames (real clip frames, resized).
        curriculum: fraction of the steps spent on the curriculum: objects shrink from
            `start_size` to the world's sizes, distractors and all caption forms come in (a
            from-scratch tower finds a small object on real frames sooner with it).
        start_size: the relative object size the curriculum starts from.
        seed: the training data stream and the init (held-out data use another stream).
        threads: torch CPU threads (1: on a shared machine more threads mostly wait).
    """

    steps: int = 4000
    batch: int = 12
    lr: float = 5e-4
    weight_decay: float = 0.05
    frame_size: tuple[int, int] = (160, 90)
    curriculum: float = 0.3
    start_size: float = 0.5
    seed: int = 0
    threads: int = 1

    def lesson(self, step: int) -> dict:
        """clip_batch settings at a step: size, distractors, plain captions, token loss on."""
        t = step / max(1, self.steps * self.curriculum)  # >= 1 once the curriculum is over
        if t >= 1:
            return {"size": None, "distractors": 2, "plain": False, "tokens": True}
        size = self.start_size + (SIZE_RANGE[1] - self.start_size) * t
        return {"size": size, "distractors": int(t * 3), "plain": t < 0.5, "tokens": t >= 0.5}


def zero_shot(model, tokenizer, backgrounds: Backgrounds, rng: np.random.Generator,
              per_class: int = 8, distractors: int = 0, size: float | None = None) -> float:
    """Zero-shot accuracy over the 24 colour x shape captions "a {colour} {shape}".

    Each class gets `per_class` fresh frames holding that object (plus `distractors` objects of
    other names; objects of `size`, default the world's sizes). A frame is right when the caption
    that scores highest (global embedding) names an object drawn in it: without distractors its
    own caption (chance 1/24); with k distractors any of its k + 1 objects, since each caption is
    as true of the frame as the others (chance at most (k + 1)/24).
    """
    import torch
    import torch.nn.functional as F

    frames, labels = [], []
    for name in NAMES:
        colour, shape = name.split(" ")
        for _ in range(per_class):
            target = sample_object(rng, shape=shape, colour=colour, size=size)
            objs = [target]
            while len(objs) < 1 + distractors:
                obj = sample_object(rng, avoid=objs, size=size)
                if obj.name != name:
                    objs.append(obj)
            frames.append(draw_all(backgrounds.frame(rng), objs))
            labels.append({NAMES.index(o.name) for o in objs})
    with torch.inference_mode():
        text = F.normalize(model.encode_text(tokenizer([f"a {n}" for n in NAMES])), dim=-1)
        glob, _ = image_views(model, to_pixels(model, np.stack(frames)))
        pred = (glob @ text.T).argmax(-1).numpy()
    return float(np.mean([int(p) in names for p, names in zip(pred, labels)]))


def train_clip(config: ClipTrainConfig, out: str | Path) -> dict:
    """Train the world CLIP and save its checkpoint at `out`.

    Returns:
        the figures recorded in the checkpoint's "world" entry: world_version, seed, steps,
        wall_s, params, zero_shot (held-out, one object per frame), zero_shot_distractors (with
        two distractors: the top caption names one of the frame's objects), chance,
        chance_distractors.
    """
    import open_clip
    import torch
    from tqdm import tqdm
    from videocfr.train.optim import warmup_cosine

    torch.set_num_threads(config.threads)
    name = register_world_clip()
    torch.manual_seed(config.seed)
    model = open_clip.create_model(name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(name)
    backgrounds = Backgrounds(size=config.frame_size)
    seeds = np.random.SeedSequence([config.seed, WORLD_VERSION]).spawn(2)
    rng, held_out = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            fused=True)
    warm = max(1, config.steps // 20)
    sched = warmup_cosine(opt, warm, config.steps)
    global_loss, token_loss = open_clip.ClipLoss(), token_max_loss_class()()
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(config.steps), desc="world clip", unit="step", mininterval=10)
    for step in bar:
        lesson = config.lesson(step)
        frames, texts, _ = clip_batch(rng, backgrounds, config.batch, size=lesson["size"],
                                      distractors=lesson["distractors"], plain=lesson["plain"])
        glob, tokens = image_views(model, to_pixels(model, frames))
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        scale = model.logit_scale.exp()
        loss = global_loss(glob, text, scale)
        if lesson["tokens"]:
            loss = loss + token_loss(tokens, text, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        if step % 25 == 0:
            log.info("step %d loss %.3f", step, loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}")
    wall = time.perf_counter() - start
    model.eval()
    figures = {
        "world_version": WORLD_VERSION, "seed": config.seed, "model": name,
        "config": asdict(config), "wall_s": round(wall, 1),
        "params": int(sum(p.numel() for p in model.parameters())),
        "zero_shot": zero_shot(model, tokenizer, backgrounds, held_out),
        "zero_shot_distractors": zero_shot(model, tokenizer, backgrounds, held_out,
                                           distractors=2),
        "chance": 1.0 / len(NAMES),
        "chance_distractors": 3.0 / len(NAMES),  # an upper bound: three named objects a frame
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), "world": figures}, tmp)
    tmp.replace(out)
    log.info("world CLIP: %s", figures)
    return figures
