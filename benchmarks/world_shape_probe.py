"""Can an image tower learn shape from the world's frames? A supervised 4-way shape probe.

The first world CLIP (an open_clip ViT, 12 px patches) learned colour (held-out 0.98) but not
shape (0.25, chance) from its contrastive loss; this probe is how that was found and how its
replacement was chosen. It removes the text side and the contrastive objective: the same frames
(`sample_object` of a random shape and colour on a real clip frame, or on flat grey), the same
pixels (`world.clip.to_pixels`), a 4-way shape label and cross-entropy, for

- `vit`: an open_clip ViT of the first world CLIP's shape (4 layers, width 128, 12 px patches,
  average pool; 96 px) + a linear head;
- `resnet`: the `videocfr-world` image tower as configured now (open_clip's ModifiedResNet at
  width 16) + a linear head;
- `cnn`: a 4-layer convolutional net of about 0.2M parameters (stride-2 convs, global max pool).

Held-out accuracy is on 96 frames from another seed; chance is 0.25. The last line:

    shape_probe steps=<n> size=<s> background=<real|grey> vit= resnet= cnn= chance=0.25
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _frames(rng, backgrounds, n: int, size: float, grey: bool):
    from videocfr.world.objects import SHAPES, draw_all, sample_object

    frames, labels = [], []
    for _ in range(n):
        k = int(rng.integers(len(SHAPES)))
        base = np.full((90, 160, 3), 128, np.uint8) if grey else backgrounds.frame(rng)
        frames.append(draw_all(base, [sample_object(rng, shape=SHAPES[k], size=size)]))
        labels.append(k)
    return np.stack(frames), np.array(labels)


def _conv_net():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
        nn.Conv2d(64, 128, 3, 2, 1), nn.GELU(), nn.Conv2d(128, 128, 3, 1, 1), nn.GELU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 4))


def probe(kind: str, steps: int, size: float, grey: bool, lr: float) -> float:
    """Held-out shape accuracy of `kind` ("vit", "resnet" or "cnn") after `steps` batches of 12."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from open_clip.transformer import VisionTransformer
    from videocfr.vlm import clip_views
    from videocfr.world import clip as wc
    from videocfr.world.frames import Backgrounds

    torch.manual_seed(0)
    clip = open_clip.create_model(wc.register_world_clip(), pretrained=None)
    if kind in ("vit", "resnet"):
        tower = clip.visual if kind == "resnet" else VisionTransformer(
            image_size=96, patch_size=12, width=128, layers=4, heads=4, mlp_ratio=4.0,
            output_dim=clip.visual.output_dim, pool_type="avg")
        head = torch.nn.Linear(tower.output_dim, 4)
        params = list(tower.parameters()) + list(head.parameters())

        def forward(px):
            return head(F.normalize(clip_views.image_views(tower, px)[0], dim=-1) * 10)
        modules = (tower, head)
    else:
        net = _conv_net()
        params, forward, modules = list(net.parameters()), net, (net,)
    backgrounds = Backgrounds(size=(160, 90))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    rng = np.random.default_rng(0)
    test_x, test_y = _frames(np.random.default_rng(9), backgrounds, 96, size, grey)
    test_px = wc.to_pixels(clip, test_x)
    for _ in range(steps):
        x, y = _frames(rng, backgrounds, 12, size, grey)
        loss = F.cross_entropy(forward(wc.to_pixels(clip, x)), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for m in modules:
        m.eval()
    with torch.inference_mode():
        pred = forward(test_px).argmax(-1).numpy()
    return float((pred == test_y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=float, default=0.18, help="relative object size")
    ap.add_argument("--grey", action="store_true", help="flat grey frames, not clip frames")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    acc = {}
    for kind, lr in (("vit", 5e-4), ("resnet", 1e-3), ("cnn", 1e-3)):
        start = time.perf_counter()
        acc[kind] = probe(kind, args.steps, args.size, args.grey, lr)
        print(f"{kind}: held-out shape accuracy {acc[kind]:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"shape_probe steps={args.steps} size={args.size} "
          f"background={'grey' if args.grey else 'real'} vit={acc['vit']:.3f} "
          f"resnet={acc['resnet']:.3f} cnn={acc['cnn']:.3f} chance=0.25")


if __name__ == "__main__":
    main()
