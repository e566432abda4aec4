"""The two views of an image that the semantic prior reads from an open_clip image tower
(METHOD §2): the pooled embedding and per-location tokens, both in the joint image-text space.

One definition for precompute's `ClipEmbedder` and the world CLIP's trainer, so the tokens a
model is trained on are the tokens the cache stores. Two tower families have tokens:

- `VisionTransformer` (ViT-B-32, ...): the transformer's output patch tokens through the same
  `ln_post` and `proj` as the pooled token (open_clip's `output_tokens` returns them before
  `proj`). A ViT with attentional pooling has no per-patch tokens and is refused.
- `ModifiedResNet` (RN50, ..., the world CLIP): the last feature map's positions through the
  attention pool's value and output projections, each position attending to itself only
  (the dense-token reading of MaskCLIP, Zhou et al. 2022). The pooled token is the model's own
  attention pool.

Any other tower (timm, Hugging Face) is refused with the fix.

Example:
    >>> check_tower(model.visual, "ViT-B-32")
    >>> pooled, tokens = image_views(model.visual, pixels)   # [B, D], [B, T, D], unnormalised
"""

from __future__ import annotations


def tower_kind(visual) -> str:
    """"vit" or "resnet": the family of an open_clip image tower (else ValueError)."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "vit"
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    raise ValueError(f"per-location tokens need an open_clip VisionTransformer or ModifiedResNet "
                     f"image tower, got {type(visual).__name__}; pick a ViT (ViT-B-32...) or an "
                     f"RN model (RN50...)")


def check_tower(visual, name: str) -> None:
    """Refuse, naming the model, an image tower whose per-location tokens cannot be read."""
    try:
        kind = tower_kind(visual)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    if kind == "vit" and visual.attn_pool is not None:
        raise ValueError(f"{name}: attentional pooling has no per-patch tokens; pick a ViT "
                         f"model without attn pooling")


def num_tokens(visual) -> int:
    """T, the per-location tokens of one image."""
    if tower_kind(visual) == "vit":
        gh, gw = visual.grid_size
        return int(gh * gw)
    side = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    return int((side // 32) ** 2)  # the attention pool's grid: a 32x downsampling


def project_vit_tokens(visual, tokens):
    """ln_post (where the pool path applies it) and proj on a ViT's output tokens [B, N, W]."""
    tokens = visual.ln_post(tokens)  # per-token LayerNorm: same before or after pooling
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    return tokens


def resnet_tokens(pool, features):
    """A ModifiedResNet's dense tokens [B, HW, D] from its last feature map [B, C, H, W]:
    v_proj then c_proj of each position plus its positional embedding (softmax over one key
    is 1, so this is the pool's attention with each position as its own only key)."""
    x = features.flatten(2).transpose(1, 2)  # (B, HW, C)
    x = x + pool.positional_embedding[1:].to(x.dtype)
    return pool.c_proj(pool.v_proj(x))


def image_views(visual, pixels):
    """(pooled [B, D], tokens [B, T, D]) of preprocessed pixels, unnormalised.

    The pooled embedding is the model's own (`encode_image`'s); the tokens share its space.
    """
    if tower_kind(visual) == "vit":
        x = visual.transformer(visual._embeds(pixels))  # (B, 1 + T, W)
        pooled, _ = visual._pool(x)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return pooled, project_vit_tokens(visual, x[:, 1:])
    x = visual.stem(pixels)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    return visual.attnpool(x), resnet_tokens(visual.attnpool, x)
