"""Can the world CLIP's image tower learn shape at all? A supervised 4-way shape probe.

The world CLIP learns colour (held-out 0.98) but not shape (0.25, chance) from its contrastive
loss. This probe removes the text side and the contrastive objective: the same frames
(`sample_object` of a random shape and colour on a real clip frame, or on flat grey), the same
pixels (`clip.to_pixels`), a 4-way shape label and cross-entropy, for

- `vit`: the `videocfr-world` image tower (open_clip ViT, from its config) + a linear head;
- `cnn`: a 4-layer convolutional net of about 0.2M parameters (stride-2 convs, global max pool).

Held-out accuracy is on 96 frames from another seed; chance is 0.25. The last line:

    shape_probe steps=<n> size=<s> background=<real|grey> vit=<acc> cnn=<acc> chance=0.25
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
    """Held-out shape accuracy of `kind` ("vit" or "cnn") after `steps` batches of 12."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from videocfr.world import clip as wc
    from videocfr.world.frames import Backgrounds

    torch.manual_seed(0)
    clip = open_clip.create_model(wc.register_world_clip(), pretrained=None)
    if kind == "vit":
        head = torch.nn.Linear(clip.visual.output_dim, 4)
        params = list(clip.visual.parameters()) + list(head.parameters())

        def forward(px):
            return head(wc.image_views(clip, px)[0] * 10)
        modules = (clip.visual, head)
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
    for kind, lr in (("vit", 5e-4), ("cnn", 1e-3)):
        start = time.perf_counter()
        acc[kind] = probe(kind, args.steps, args.size, args.grey, lr)
        print(f"{kind}: held-out shape accuracy {acc[kind]:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"shape_probe steps={args.steps} size={args.size} "
          f"background={'grey' if args.grey else 'real'} vit={acc['vit']:.3f} "
          f"cnn={acc['cnn']:.3f} chance=0.25")


if __name__ == "__main__":
    main()
