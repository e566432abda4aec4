"""The world policy's fine-tune: its teacher-forced completion is what generation and the
trainer's reward read, its noisy words stay among the options, and it writes a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skvideo")

from videocfr.train.world_policy import (  # noqa: E402
    OVERLAY,
    PolicyConfig,
    _noisy_words,
    completion_ids,
    train_policy,
    with_completion,
)
from videocfr.train.world_pool import VideoPool, text_batch  # noqa: E402
from videocfr.world.captions import make_question  # noqa: E402
from videocfr.world.objects import sample_object  # noqa: E402


def test_teacher_forced_positions_are_the_ones_generation_samples(world_model):
    # greedy generation's own tokens, fed back through with_completion, are each the argmax at
    # the position the fine-tune's loss reads: same masks, same positions, no shift
    from videocfr.train.rewards import AccuracyReward

    model, processor, backgrounds = world_model
    rng = np.random.default_rng(1)
    pool = VideoPool(model, processor, backgrounds, rng, OVERLAY, capacity=3, fresh=1)
    videos, questions, fps = pool.draw(6, 3, np.ones(3, bool), lambda r: 1.0)
    batch = text_batch(processor, videos, questions, fps)
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=3, do_sample=False)[:, -3:]
        logits = model(**with_completion(batch, generated), logits_to_keep=4).logits[:, :-1]
    assert torch.equal(logits.argmax(-1), generated)
    words = [q.answer_text for q in questions]
    target = completion_ids(processor.tokenizer, questions, words)
    texts = processor.tokenizer.batch_decode(target)
    assert texts == [f" {q.answer_text} {q.answer}" for q in questions]
    reward = AccuracyReward(mode="final-letter")
    assert reward(None, texts, answer=[q.answer for q in questions],
                  problem_type=["multiple choice"] * 3) == [1.0] * 3


def test_noisy_words_are_other_options_at_the_asked_rate():
    rng = np.random.default_rng(0)
    questions = [make_question(rng, sample_object(rng)) for _ in range(400)]
    words, true = _noisy_words(rng, questions, 0.5)
    for q, w, t in zip(questions, words, true):
        assert (w == q.answer_text) == t
        assert w in [o[3:] for o in q.options]
    assert 160 < true.sum() < 240  # binomial(400, 0.5): 5 standard deviations either side
    assert _noisy_words(rng, questions, 0.0)[1].all()


def test_train_policy_writes_a_checkpoint_with_its_record(world_model, tmp_path):
    from transformers import AutoProcessor

    model, processor, _ = world_model
    vlm = tmp_path / "vlm"
    model.save_pretrained(vlm)
    processor.save_pretrained(vlm)
    (vlm / "world.json").write_text(json.dumps({"world_version": 5, "seed": 0}))
    config = PolicyConfig(frames=(4,), steps=2, batch=2, pool_size=4, eval_count=2)
    figures = train_policy(vlm, tmp_path / "policy", config, vlm_sha256="abc")
    record = json.loads((tmp_path / "policy" / "world.json").read_text())
    assert record["policy"] == json.loads(json.dumps(figures)) and record["world_version"] == 5
    assert figures["vlm_sha256"] == "abc" and figures["steps"] == 2
    assert set(figures["eval"]) == {"sparse-4", "overlay-4"}
    assert AutoProcessor.from_pretrained(tmp_path / "policy").chat_template == \
        processor.chat_template
