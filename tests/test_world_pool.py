"""The question stages' pool of encoded videos: the same model inputs as from pixels, and
questions that stay answerable (or stay unanswerable) on the video they are drawn for."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skvideo")

from videocfr.train.world_pool import VideoPool, encode, pooled_question, text_batch  # noqa: E402
from videocfr.world.captions import distractor_exclude  # noqa: E402
from videocfr.world.frames import Backgrounds  # noqa: E402
from videocfr.world.samples import video_qa  # noqa: E402


def test_pooled_batch_is_the_processors_batch_and_gives_the_same_logits(world_model):
    from videocfr.train.world_vlm import make_batch

    model, processor, backgrounds = world_model
    rng = np.random.default_rng(3)
    samples = [video_qa(rng, backgrounds, n) for n in (2, 3, 4)]  # 3: an odd count, padded
    fps = [0.5, 1.7, 3.0]
    pixels, letters = make_batch(processor, samples, fps)
    videos = encode(model, processor, samples)
    pooled = text_batch(processor, videos, [s.question for s in samples], fps)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "video_grid_thw"):
        assert torch.equal(pooled[key], pixels[key]), key
    torch.testing.assert_close(pooled["second_per_grid_ts"], pixels["second_per_grid_ts"])
    with torch.no_grad():
        z_pixels = model(**pixels).logits
        z_pooled = model(**pooled).logits
    torch.testing.assert_close(z_pooled, z_pixels)


def test_pooled_questions_ask_a_unique_key_or_one_the_video_lacks():
    rng = np.random.default_rng(0)
    backgrounds = Backgrounds(size=(224, 126))
    asked_seen = set()
    for _ in range(60):
        objects = video_qa(rng, backgrounds, 4, distractors=(0, 2)).objects
        flat = [o for frame in objects for o in frame]
        for needle in (True, False):
            q = pooled_question(rng, objects, needle)
            if q is None:
                continue
            asked_seen.add((q.asked, needle))
            (key,) = distractor_exclude(q.target, q.asked)
            holders = [o for o in flat
                       if key in distractor_exclude(o, q.asked)]  # objects with that key
            if needle:
                assert holders == [q.target]  # the one object with the asked key
                assert q.answer_text in (q.target.colour, q.target.shape)
            else:
                assert holders == []  # no object has it: the answer cannot be seen
    assert asked_seen == {("colour", True), ("colour", False), ("shape", True),
                          ("shape", False)}


def test_pool_encodes_fresh_videos_each_draw_and_keeps_its_capacity(world_model):
    from videocfr.train.world_vlm import Stage, _fps

    model, processor, backgrounds = world_model
    pool = VideoPool(model, processor, backgrounds, np.random.default_rng(1),
                     Stage(1, (2,), (0, 1)), capacity=6, fresh=2)
    videos, questions, fps = pool.draw(2, 4, np.array([True, True, False, True]), _fps)
    assert len(pool.videos[2]) == 6 and len(videos) == len(questions) == len(fps) == 4
    first = list(pool.videos[2])
    pool.draw(2, 4, np.ones(4, bool), _fps)
    now = list(pool.videos[2])
    assert len(now) == 6 and all(a is b for a, b in zip(now[:4], first[2:]))  # oldest left
    assert not any(v is f for v in now[4:] for f in first)  # two fresh ones
    with pytest.raises(ValueError, match="fresh"):
        VideoPool(model, processor, backgrounds, np.random.default_rng(1), Stage(1), 2, 3)
