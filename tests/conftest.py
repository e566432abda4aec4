"""Fixtures shared by the test files.

Helper modules of this folder (`videos`, `synthetic_cache`, `faults_data`) are imported by
their bare names (`import videos as clips`, `from synthetic_cache import make_cache`): pytest puts
this folder on sys.path for its conftest, and subprocess scripts of the tests put it there
themselves. Every test runs under pytest-timeout (setup.cfg: `timeout`, 1800 s); a test that
needs longer says so with `@pytest.mark.timeout(seconds)`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# shard checks remember their passes in a trust record of this session (never the user's
# ~/.cache/videocfr/trusted-shards)
os.environ.setdefault("VIDEOCFR_TRUST_DIR", tempfile.mkdtemp(prefix="videocfr-trust-"))

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # bare-name helpers under any import mode
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def tiny_clip():
    """The tiny random open_clip embedder ("videocfr-tiny", no weights; D = 16, 32 px images,
    4 patches), batch size 4, built once per session."""
    from videocfr.precompute.clip import TINY_MODEL, ClipEmbedder

    return ClipEmbedder(TINY_MODEL, "none", batch_size=4)


@pytest.fixture(scope="session")
def tiny_vlm():
    """(model, processor): the tiny random Qwen2.5-VL of vlm.tiny with seed 0, built once."""
    from videocfr.vlm.tiny import tiny_model_and_processor

    return tiny_model_and_processor(seed=0)


@pytest.fixture(scope="session")
def world_model():
    """(model, processor, backgrounds): a random world-shaped Qwen2.5-VL (seed 0) with the world
    processor, and 224 x 126 background frames, built once."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from videocfr.train.world_vlm import world_processor
    from videocfr.vlm.tiny import tiny_config
    from videocfr.world.frames import Backgrounds

    torch.manual_seed(0)
    processor = world_processor(0)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(processor.tokenizer, "world")).eval()
    return model, processor, Backgrounds(size=(224, 126))


@pytest.fixture(scope="session")
def tiny_scorer():
    """The frozen scorer over the tiny random Qwen2.5-VL (seed 0, batches of 4)."""
    from videocfr.vlm.scorer import FrozenScorer

    return FrozenScorer.tiny(seed=0, batch_size=4)


@pytest.fixture
def synthetic_cache(tmp_path):
    """make(name="c", **make_cache kwargs) -> Path: a finished synthetic cache under tmp_path
    (synthetic_cache.make_cache: random unit embeddings, fused priors, no video decoded)."""
    from synthetic_cache import make_cache

    def make(name: str = "c", **kwargs) -> Path:
        path = tmp_path / name
        make_cache(path, **kwargs)
        return path

    return make
