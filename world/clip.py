"""The world's tiny CLIP: its open_clip config and its training data.

`videocfr-world` (model_configs/videocfr-world.json, registered with open_clip's
`add_model_config`) is open_clip's ModifiedResNet image tower (the RN50 family's architecture:
a three-convolution stem, bottleneck stages, an attention pool) at a tiny width on 96 px images,
and a text tower of 3 layers, width 128; joint space D = 64. A ViT image tower of the same
budget does not learn shape from this data in CPU minutes (docs/world.md,
benchmarks/world_shape_probe.py); the convolutions' locality does.

This module holds what precompute and the trainer share: the config's registration, the 24
colour x shape names, the contrastive batches (`clip_batch`: real clip frames with 1..3 objects,
a caption naming one, every named object distinct within a batch and no distractor named by
any caption of the batch, so the contrastive targets are true) and the model's pixel
transform. The trainer is `videocfr.train.world_clip`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .captions import CAPTION_TEMPLATES, LETTERS, QUESTION_TEMPLATES
from .frames import Backgrounds
from .objects import COLOURS, SHAPES, WorldObject, draw_all, sample_object

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
