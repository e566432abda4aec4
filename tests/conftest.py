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


# 1000 of the default run's 4000 steps (its curriculum over the first 30%), ~80 s on one core.
# Measured (world version 2) at the world's object sizes: zero-shot over 24 classes 0.73 / 0.68 /
# 0.73 on three held-out streams (random weights 0.05 / 0.06 / 0.04, chance 1/24). World version
# 3: the needle frame ranked first by precompute's semantic salience in 32, 34 and 31 of 48 shots
# on three streams (random weights 7 of 48 on each, chance 6 of 48); 12 shots were too few (4 of
# 12 on one stream whose 48 gave 32). The full run reaches 1.0 (docs/world.md).
CI_CLIP_STEPS = 1000


@pytest.fixture(scope="session")
def ci_clip(tmp_path_factory):
    """(path, figures): the world CLIP trained at CI size (CI_CLIP_STEPS, seed 0), once."""
    pytest.importorskip("open_clip")
    pytest.importorskip("skvideo")
    from videocfr.train.world_clip import ClipTrainConfig, train_clip

    path = tmp_path_factory.mktemp("world") / "clip.pt"
    return path, train_clip(ClipTrainConfig(steps=CI_CLIP_STEPS, seed=0), path)


@pytest.fixture(scope="session")
def refocus_world():
    """benchmarks/refocus_world.py loaded as a module (its control, checks and `run`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "refocus_world", TESTS.parent / "benchmarks" / "refocus_world.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
