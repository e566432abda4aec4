"""ClipEmbedder with the tiny random open_clip model (no weights downloaded)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from videocfr.precompute.clip import TINY_MODEL, ClipEmbedder, register_tiny_model, resolve_model


def frames(n: int = 5, h: int = 48, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_shapes_and_normalisation(tiny_clip):
    g, p = tiny_clip.embed_images(frames())
    assert g.shape == (5, 16) and g.dtype == np.float32
    assert p.shape == (5, tiny_clip.num_patches, 16) and p.dtype == np.float32
    assert tiny_clip.num_patches == 4  # 32 px image, 16 px patches
    np.testing.assert_allclose(np.linalg.norm(g, axis=-1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p, axis=-1), 1, atol=1e-5)
    t = tiny_clip.embed_texts(["a red disc", "a bicycle", "a rabbit", "x"])
    assert t.shape == (4, 16) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=-1), 1, atol=1e-5)
    assert not np.allclose(t[0], t[1])


def test_global_equals_model_encode_image(tiny_clip):
    f = frames()
    g, _ = tiny_clip.embed_images(f)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(
            tiny_clip.model.encode_image(tiny_clip.preprocess(f)), dim=-1)
    np.testing.assert_allclose(g, ref.numpy(), atol=1e-5)


def test_projecting_the_class_token_our_way_reproduces_the_image_embedding(tiny_clip):
    """The patch tokens go through `_project` (ln_post + proj); the same map applied to the
    class token must give the model's own image embedding — so patches share its space."""
    f = frames(4)
    visual = tiny_clip.model.visual
    with torch.inference_mode():
        pixels = tiny_clip.preprocess(f)
        x = visual.transformer(visual._embeds(pixels))  # (B, 1 + T, W)
        ours = tiny_clip._project(x[:, :1])[:, 0]  # class token through our projection
        ref = tiny_clip.model.encode_image(pixels)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_patch_tokens_match_open_clip_output_tokens(tiny_clip):
    f = frames(3)
    _, p = tiny_clip.embed_images(f)
    visual = tiny_clip.model.visual
    visual.output_tokens = True
    try:
        with torch.inference_mode():
            _pooled, tokens = visual(tiny_clip.preprocess(f))  # tokens before proj
            ref = torch.nn.functional.normalize(tokens @ visual.proj, dim=-1)
    finally:
        visual.output_tokens = False
    np.testing.assert_allclose(p, ref.numpy(), atol=1e-5)


def test_preprocess_matches_open_clip_transform(tiny_clip):
    """Our tensor transform vs open_clip's own PIL transform (bicubic both; small differences
    come from PIL's vs torch's bicubic kernels)."""
    import open_clip
    from PIL import Image

    transform = open_clip.image_transform(tiny_clip.image_size, is_train=False,
                                          mean=tiny_clip.model.visual.image_mean,
                                          std=tiny_clip.model.visual.image_std)
    f = np.repeat(np.repeat(frames(2, 12, 20), 4, axis=1), 4, axis=2)  # smooth-ish 48x80
    ours = tiny_clip.preprocess(f).numpy()
    ref = np.stack([transform(Image.fromarray(x)).numpy() for x in f])
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).mean() < 0.05


def test_batching_does_not_change_results(tiny_clip):
    f = frames(7)
    g1, p1 = tiny_clip.embed_images(f)
    one = ClipEmbedder(TINY_MODEL, "none", batch_size=7)
    g2, p2 = one.embed_images(f)
    np.testing.assert_allclose(g1, g2, atol=1e-5)
    np.testing.assert_allclose(p1, p2, atol=1e-5)


def test_random_weights_are_seeded_and_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="videocfr.precompute.clip"):
        a = ClipEmbedder(TINY_MODEL, "none", seed=3)
    assert any("RANDOM weights" in r.message for r in caplog.records)
    b = ClipEmbedder(TINY_MODEL, "none", seed=3)
    c = ClipEmbedder(TINY_MODEL, "none", seed=4)
    f = frames(2)
    assert np.array_equal(a.embed_images(f)[0], b.embed_images(f)[0])
    assert not np.allclose(a.embed_images(f)[0], c.embed_images(f)[0])
    assert a.model_info == {"name": TINY_MODEL, "pretrained": "random"}


def test_local_checkpoint_file(tmp_path, tiny_clip):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    loaded = ClipEmbedder(TINY_MODEL, str(path), seed=99)
    assert loaded.model_info["pretrained"].startswith("file:")
    assert len(loaded.model_info["pretrained"]) == len("file:") + 64
    f = frames(2)
    np.testing.assert_allclose(loaded.embed_images(f)[0], tiny_clip.embed_images(f)[0], atol=1e-6)


def test_unknown_names_list_what_is_available():
    with pytest.raises(ValueError, match=r"Model config for 'ViT-Nope' not found\. Available: "):
        resolve_model("ViT-Nope", "openai")
    with pytest.raises(ValueError, match=r"Available tags: \[.*'openai'"):
        resolve_model("ViT-B-32", "no_such_tag")
    assert resolve_model("ViT-B-32", "openai")[2] == {"name": "ViT-B-32", "pretrained": "openai"}


def test_register_tiny_model_is_idempotent():
    import open_clip

    assert register_tiny_model() == TINY_MODEL
    assert register_tiny_model() == TINY_MODEL
    assert TINY_MODEL in open_clip.list_models()


def test_bad_arguments():
    with pytest.raises(ValueError, match="precision"):
        ClipEmbedder(TINY_MODEL, "none", precision="fp16")  # needs CUDA
    with pytest.raises(ValueError, match="batch_size"):
        ClipEmbedder(TINY_MODEL, "none", batch_size=0)
    e = ClipEmbedder(TINY_MODEL, "none")
    with pytest.raises(ValueError, match="uint8"):
        e.embed_images(np.zeros((2, 8, 8, 3), np.float32))


@pytest.mark.slow
def test_vit_b32_random_projection():
    e = ClipEmbedder("ViT-B-32", "none", batch_size=4)
    f = frames(2, 120, 160)
    g, p = e.embed_images(f)
    assert g.shape == (2, 512) and p.shape == (2, 49, 512)
    visual = e.model.visual
    with torch.inference_mode():
        pixels = e.preprocess(f)
        x = visual.transformer(visual._embeds(pixels))
        ours = e._project(x[:, :1])[:, 0]
        ref = e.model.encode_image(pixels)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)


# -- ModifiedResNet towers (RN50's family; the world CLIP): dense tokens of the attention pool --

@pytest.fixture(scope="module")
def world_rn():
    return ClipEmbedder("videocfr-world", "none", batch_size=4)


def test_resnet_tower_global_is_the_models_own_and_tokens_cover_the_pool_grid(world_rn):
    from open_clip.modified_resnet import ModifiedResNet

    assert isinstance(world_rn.model.visual, ModifiedResNet)
    f = frames(3, 90, 160)
    g, p = world_rn.embed_images(f)
    side = world_rn.image_size[0] // 32
    assert world_rn.num_patches == side * side and p.shape == (3, side * side, g.shape[1])
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(
            world_rn.model.encode_image(world_rn.preprocess(f)), dim=-1)
    np.testing.assert_allclose(g, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p, axis=-1), 1, atol=1e-5)


def test_resnet_tokens_live_in_the_pooled_space():
    """A feature map equal at every position, with the positional embedding zeroed: the pool
    attends over identical values, so its output must equal every dense token — the tokens are
    the pool's own map, not another space."""
    from open_clip.modified_resnet import AttentionPool2d
    from videocfr.vlm.clip_views import resnet_tokens

    torch.manual_seed(0)
    pool = AttentionPool2d(3, 32, 4, 16).eval()
    with torch.no_grad():
        pool.positional_embedding.zero_()
        x = torch.randn(2, 32, 1, 1).expand(2, 32, 3, 3).contiguous()
        pooled, tokens = pool(x), resnet_tokens(pool, x)
    assert tokens.shape == (2, 9, 16)
    np.testing.assert_allclose(tokens.numpy(), pooled[:, None].expand(2, 9, 16).numpy(),
                               rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and a map that differs by position gives differing tokens
        y = torch.randn(2, 32, 3, 3)
        assert not torch.allclose(resnet_tokens(pool, y)[:, 0], resnet_tokens(pool, y)[:, 1])


def test_a_tower_without_location_tokens_is_refused_naming_the_fix():
    from videocfr.vlm.clip_views import check_tower

    with pytest.raises(ValueError, match=r"mytower: .*VisionTransformer or ModifiedResNet.*RN50"):
        check_tower(torch.nn.Identity(), "mytower")


@pytest.mark.slow
def test_rn50_random_tokens():
    e = ClipEmbedder("RN50", "none", batch_size=2)
    g, p = e.embed_images(frames(2, 120, 160))
    assert g.shape == (2, 1024) and p.shape == (2, 49, 1024)
