"""The world's tiny CLIP: an open_clip config trained with open_clip's contrastive loss.

`videocfr-world` (model_configs/videocfr-world.json, registered with open_clip's
`add_model_config`) is a ViT of 4 layers, width 128, on 64 px images in 8 px patches, and a text
tower of 3 layers, width 128; joint space D = 64. It is trained on `samples.clip_pair`-style
frames (real clip frames with 1..3 objects, a caption naming one) with two `open_clip.ClipLoss`
terms: the usual one on the pooled image embedding, and the same loss on the best-matching
projected patch token (`TokenMaxClipLoss`), since precompute's semantic salience takes the max
over the global embedding and the patch tokens (METHOD §2) and both views must live in the text's
space. Within a batch the named objects are distinct and no distractor carries a name that a
caption of the batch names, so the contrastive targets are true.

The checkpoint is a torch file `{"state_dict", "world"}` that `open_clip.create_model(name,
pretrained=<file>)` loads as it is (precompute's `pretrained: <file>` path); `world` records the
generator version, seed and training figures, checked by `check_checkpoint`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .captions import CAPTION_TEMPLATES, LETTERS, QUESTION_TEMPLATES
from .frames import Backgrounds
from .objects import (
    COLOURS,
    SHAPES,
    SIZE_RANGE,
    WORLD_VERSION,
    WorldObject,
    draw_all,
    sample_object,
)

log = logging.getLogger(__name__)

WORLD_CLIP = "videocfr-world"
CONFIG_DIR = Path(__file__).parent / "model_configs"
NAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)  # the 24 colour x shape classes


def register_world_clip() -> str:
    """Register the world CLIP's config file with open_clip (idempotent); returns its name."""
    import open_clip
    from open_clip import factory

    if WORLD_CLIP not in open_clip.list_models() or (
            CONFIG_DIR not in factory._MODEL_CONFIG_PATHS):
        open_clip.add_model_config(CONFIG_DIR)
    return WORLD_CLIP


def training_text(rng: np.random.Generator, obj: WorldObject) -> str:
    """A text naming both attributes: a caption or a question form with its answer."""
    forms = list(CAPTION_TEMPLATES) + [
        QUESTION_TEMPLATES["colour"] + " {colour}",
        QUESTION_TEMPLATES["colour"] + " {letter}. {colour}",
        QUESTION_TEMPLATES["shape"] + " {shape}",
        QUESTION_TEMPLATES["shape"] + " {letter}. {shape}",
    ]
    form = forms[int(rng.integers(len(forms)))]
    return form.format(colour=obj.colour, shape=obj.shape, letter=LETTERS[int(rng.integers(4))])


def clip_batch(rng: np.random.Generator, backgrounds: Backgrounds, batch: int, *,
               size: float | None = None, distractors: int = 2, plain: bool = False
               ) -> tuple[np.ndarray, list[str], list[str]]:
    """A contrastive batch: `batch` frames, each naming a distinct object; 0..`distractors`
    objects per frame whose names no caption of the batch uses.

    Args:
        size: fixed relative object size (default: sampled from SIZE_RANGE).
        plain: captions "a {colour} {shape}" only (else any template or question form).

    Returns:
        (frames uint8 [B, H, W, 3], texts [B], target names [B]).
    """
    if not 2 <= batch <= len(NAMES) // 2:
        raise ValueError(f"batch must be in [2, {len(NAMES) // 2}] (distinct named objects, and "
                         f"as many names left for distractors), got {batch}")
    order = rng.permutation(len(NAMES))
    named = [NAMES[i] for i in order[:batch]]
    frames, texts = [], []
    for name in named:
        colour, shape = name.split(" ")
        target = sample_object(rng, shape=shape, colour=colour, size=size)
        objs = [target]
        for _ in range(int(rng.integers(0, distractors + 1))):
            try:  # as many distractors as fit: large curriculum objects leave little room
                while True:
                    obj = sample_object(rng, avoid=objs, size=size)
                    if obj.name not in named:
                        break
            except ValueError:
                break
            objs.append(obj)
        frames.append(draw_all(backgrounds.frame(rng), [objs[i] for i in rng.permutation(
            len(objs))]))
        texts.append(f"a {name}" if plain else training_text(rng, target))
    return np.stack(frames), texts, named


def to_pixels(model, frames: np.ndarray):
    """The model's transform on frames: shortest side to the input size (bicubic, antialiased),
    centre crop, mean/std normalisation — as precompute's `ClipEmbedder.preprocess` does.

    Args:
        frames: uint8 [B, H, W, 3] RGB.

    Returns:
        torch float32 [B, 3, S, S].
    """
    import open_clip
    import torch
    import torch.nn.functional as F

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", model.visual.image_size)
    th, tw = (size, size) if isinstance(size, int) else tuple(size)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - th) // 2, (nw - tw) // 2
    x = x[:, :, top:top + th, left:left + tw].clamp(0, 1)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def image_views(model, pixels):
    """(global [B, D], patch tokens [B, T, D]) in the joint space, L2-normalised.

    The patch tokens go through the pooled token's ln_post and proj (precompute's views).
    """
    import torch.nn.functional as F

    visual = model.visual
    x = visual.transformer(visual._embeds(pixels))  # (B, 1 + T, W)
    pooled, _ = visual._pool(x)
    tokens = visual.ln_post(x[:, 1:])
    if visual.proj is not None:
        pooled, tokens = pooled @ visual.proj, tokens @ visual.proj
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
            from-scratch ViT does not find a small object on real frames without it).
        start_size: the relative object size the curriculum starts from.
        seed: the training data stream and the init (held-out data use another stream).
        threads: torch CPU threads (1: on a shared machine more threads mostly wait).
    """

    steps: int = 1500
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
    other names; objects of `size`, default the world's sizes); a frame is right when its own
    caption scores highest (global embedding). Chance is 1/24.
    """
    import torch
    import torch.nn.functional as F

    frames, labels = [], []
    for k, name in enumerate(NAMES):
        colour, shape = name.split(" ")
        for _ in range(per_class):
            target = sample_object(rng, shape=shape, colour=colour, size=size)
            objs = [target]
            while len(objs) < 1 + distractors:
                obj = sample_object(rng, avoid=objs, size=size)
                if obj.name != name:
                    objs.append(obj)
            frames.append(draw_all(backgrounds.frame(rng), objs))
            labels.append(k)
    with torch.inference_mode():
        text = F.normalize(model.encode_text(tokenizer([f"a {n}" for n in NAMES])), dim=-1)
        glob, _ = image_views(model, to_pixels(model, np.stack(frames)))
        pred = (glob @ text.T).argmax(-1).numpy()
    return float((pred == np.array(labels)).mean())


def train_clip(config: ClipTrainConfig, out: str | Path) -> dict:
    """Train the world CLIP and save its checkpoint at `out`.

    Returns:
        the figures recorded in the checkpoint's "world" entry: world_version, seed, steps,
        wall_s, params, zero_shot (held-out, one object per frame), zero_shot_distractors (with
        two distractors), chance.
    """
    import open_clip
    import torch
    from tqdm import tqdm

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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + np.cos(np.pi * min(1.0, s / config.steps))))
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
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), "world": figures}, tmp)
    tmp.replace(out)
    log.info("world CLIP: %s", figures)
    return figures
