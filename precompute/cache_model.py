"""The CLIP model a cache was built with, rebuilt from the cache's manifest (for text search).

`videocfr cache search` embeds its query text with the cache's own model. Models are resolved in
one place (precompute/clip.py: open_clip names, the tiny test model, pretrained tags, checkpoint
files, seeded random weights), so the search rebuilds the model here rather than in cache_format,
which stays free of torch and open_clip. The rebuilt model must reproduce the cache: its model
info equals the manifest's, and it re-embeds a stored question into the stored text embedding.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from videocfr.cache_format import Cache, CacheError

from .clip import ClipEmbedder

logger = logging.getLogger(__name__)

MIN_COSINE = 0.99  # float16 storage keeps ~3 decimals; another model lands far below this


def cache_embedder(cache: Cache, device: str = "cpu", checkpoint: str | Path | None = None
                   ) -> ClipEmbedder:
    """Rebuild the cache's CLIP model and check it reproduces the cache's text embeddings.

    Args:
        cache: the cache.
        device: torch device for the text tower.
        checkpoint: a local checkpoint file, for caches built from one ("file:<sha256>"): its
            sha256 must equal the manifest's. Default: the path the config recorded.

    Raises:
        CacheError: the manifest's model cannot be rebuilt here, or the rebuilt model does not
            reproduce the stored text embeddings (another model, seed or library version).
    """
    clip = cache.config.get("clip") if isinstance(cache.config.get("clip"), dict) else {}
    want = cache.manifest["model"]
    name = clip.get("model", want["name"])
    pretrained = want["pretrained"]
    if pretrained == "random":
        source = "none"
    elif pretrained.startswith("file:"):
        source = str(checkpoint or clip.get("pretrained", ""))
        if not source or not Path(source).is_file():
            raise CacheError(f"cache {cache.path} was built from a checkpoint file "
                             f"({pretrained}); pass it with --checkpoint PATH")
    else:
        source = pretrained
    seed = clip.get("seed", 0)
    try:
        embedder = ClipEmbedder(name, source, device=device, seed=int(seed))
    except (ValueError, RuntimeError, OSError) as err:
        raise CacheError(f"cannot rebuild the cache's CLIP model {want} here: {err}") from err
    if embedder.model_info != want:
        raise CacheError(f"the rebuilt model {embedder.model_info} is not the cache's {want}")
    check_reproduces(cache, embedder)
    return embedder


def check_reproduces(cache: Cache, embedder: ClipEmbedder) -> float:
    """Re-embed one stored question; its cosine with the stored text embedding must be high.

    Returns:
        The cosine (1.0 when the cache holds no question to compare with).
    """
    key = next(iter(cache.keys()), None)
    if key is None:
        logger.warning("cache %s holds no question: the text model cannot be checked", cache.path)
        return 1.0
    q = cache.question(*key)
    stored = q.text_embedding.astype(np.float32)
    again = embedder.embed_texts([q.question])[0]
    cos = float(stored @ again / max(float(np.linalg.norm(stored)), 1e-12))
    if cos < MIN_COSINE:
        raise CacheError(f"the rebuilt CLIP model {embedder.model_info} does not reproduce the "
                         f"cache's text embedding of question {key} (cosine {cos:.4f} < "
                         f"{MIN_COSINE}): another model, seed or library version")
    return cos
