"""The world's tiny CLIP and VLM: CI-size training runs and their real load paths."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("skvideo")

from videocfr.train.world_clip import zero_shot  # noqa: E402
from videocfr.world.clip import register_world_clip  # noqa: E402
from videocfr.world.frames import Backgrounds  # noqa: E402


def _load(path=None):
    name = register_world_clip()
    if path is None:
        torch.manual_seed(0)
        return open_clip.create_model(name, pretrained=None).eval(), name
    return open_clip.create_model(name, pretrained=str(path)).eval(), name


@pytest.mark.slow
def test_ci_clip_tells_colour_and_shape_apart_random_weights_do_not(ci_clip):
    path, figures = ci_clip
    assert figures["world_version"] >= 1 and figures["chance"] == pytest.approx(1 / 24)
    bg = Backgrounds(size=(160, 90))
    model, name = _load(path)
    tok = open_clip.get_tokenizer(name)
    trained = zero_shot(model, tok, bg, np.random.default_rng(99), per_class=4)
    control = zero_shot(_load()[0], tok, bg, np.random.default_rng(99), per_class=4)
    assert trained >= 0.5, trained  # measured 0.73 (colour alone would give 0.25)
    assert control <= 0.1, control  # measured 0.05


@pytest.mark.slow
def test_ci_clip_loads_through_precompute_and_ranks_the_needle_frame(ci_clip):
    from videocfr.precompute.clip import WORLD_CLIP, ClipEmbedder
    from videocfr.precompute.saliences import semantic_queries, semantic_raw
    from videocfr.world.captions import make_question
    from videocfr.world.objects import draw_all, sample_object

    path, _ = ci_clip
    emb = ClipEmbedder(WORLD_CLIP, str(path))
    assert emb.model_info["pretrained"].startswith("file:")
    rng = np.random.default_rng(5)
    bg = Backgrounds(size=(320, 180))
    hits = 0
    for _ in range(48):  # 8 frames, one with the needle, the others with other objects
        target = sample_object(rng)
        q = make_question(rng, target, asked="colour")
        at = int(rng.integers(8))
        frames = np.stack([draw_all(f, [target] if i == at else [sample_object(
            rng, exclude=(target.shape, target.colour))])
            for i, f in enumerate(bg.shot(rng, 8))])
        glob, patches = emb.embed_images(frames)
        raw = semantic_raw(glob, patches, emb.embed_texts(semantic_queries(q.question,
                                                                           q.options)))
        hits += int(np.argmax(raw) == at)
    assert hits / 48 >= 0.4, hits  # measured 32 of 48 (random weights 7, chance 6)


def test_world_vlm_trains_on_the_scorers_batch_and_loads_as_a_checkpoint(tmp_path):
    from videocfr.train.world_vlm import (
        LetterStage,
        Stage,
        VisionStage,
        VlmTrainConfig,
        make_batch,
        option_positions,
        train_vlm,
    )
    from videocfr.vlm.scorer import FrozenScorer, ScoreItem, letter_prompt
    from videocfr.world.samples import video_qa

    config = VlmTrainConfig(vision=VisionStage(2, 2, 56, 2, 2),
                            stages=(Stage(2, (2,), match=False), LetterStage(2, 2, video_batch=2),
                                    Stage(2, (2,))),
                            batch=2, eval_per_n=2, eval_frames=(2,), text_around=True)
    figures = train_vlm(config, tmp_path / "vlm")
    assert set(figures["eval"]["2"]) == {"needle", "no_needle"}
    scorer = FrozenScorer.from_pretrained(tmp_path / "vlm", batch_size=2)
    rng = np.random.default_rng(0)
    s = video_qa(rng, Backgrounds(size=(224, 126)), 4)
    item = ScoreItem(s.frames, s.question.question, s.question.options, s.question.answer)
    ours, ours_letters = make_batch(scorer.processor, [s], [1.0])
    theirs = scorer.batch_inputs([item], [letter_prompt(item.question, item.options)])
    assert torch.equal(ours["input_ids"], theirs["input_ids"])  # the very prompt it is scored on
    assert torch.equal(ours["pixel_values_videos"], theirs["pixel_values_videos"])
    tok = scorer.processor.tokenizer
    ids = theirs["input_ids"][0].tolist()
    before_video = tok.decode(ids[:ids.index(tok.convert_tokens_to_ids("<|vision_start|>"))])
    after_video = tok.decode(ids[ids.index(tok.convert_tokens_to_ids("<|vision_end|>")):])
    for text in (before_video, after_video):  # the checkpoint's own layout: text around the video
        assert item.question in text and "Options:" in text
    rows, cols, which = option_positions(ours["input_ids"], ours_letters[0].tolist())
    end = ids.index(tok.convert_tokens_to_ids("<|vision_end|>"))
    assert sorted(which.tolist()) == [0, 1, 2, 3] and (cols > end).all()  # the copy that sees
    assert [tok.decode(ids[c]).strip() for c in cols] == [
        next(o[3:] for o in item.options if o[0] == "ABCD"[k]) for k in which.tolist()]
    (z,) = scorer.option_logits([item])
    assert z.shape == (4,) and np.isfinite(z).all()
    import dataclasses

    with pytest.raises(ValueError, match="text_around=False asks for video first"):
        train_vlm(dataclasses.replace(config, text_around=False), tmp_path / "again",
                  init=tmp_path / "vlm")  # the checkpoint's layout is the question around it
    assert not (tmp_path / "again").exists()
    for word in ("red", "green", "blue", "yellow", "magenta", "cyan", "circle", "square",
                 "triangle", "cross", "A", "B", "C", "D"):
        text = word if len(word) == 1 else " " + word
        assert len(tok.encode(text, add_special_tokens=False)) == 1, word


def test_text_around_template_shows_the_text_before_and_after_the_video():
    from videocfr.vlm.prompts import chat_messages
    from videocfr.vlm.tiny import CHAT_TEMPLATE, chat_template, tiny_tokenizer

    tok = tiny_tokenizer()
    messages = [*chat_messages("Is it red?"), {"role": "assistant", "content": "A"}]
    qwen = tok.apply_chat_template(messages, tokenize=False, chat_template=CHAT_TEMPLATE)
    around = tok.apply_chat_template(messages, tokenize=False,
                                     chat_template=chat_template(text_around=True))
    video = "<|vision_start|><|video_pad|><|vision_end|>"
    assert f"user\n{video}Is it red?<|im_end|>" in qwen
    assert around == qwen.replace(f"{video}Is it red?", f"Is it red?{video}Is it red?")
    text = [{"role": "user", "content": [{"type": "text", "text": "Is it red?"}]}]
    assert tok.apply_chat_template(text, tokenize=False, chat_template=chat_template(
        text_around=True)) == tok.apply_chat_template(text, tokenize=False)  # no video: once


def test_freeze_rows_keeps_those_rows_and_trains_the_others():
    import torch
    from videocfr.train.world_vlm import freeze_rows

    emb = torch.nn.Embedding(6, 4)
    before = emb.weight.detach().clone()
    freeze_rows(emb.weight, [1, 3])
    opt = torch.optim.Adam(emb.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (emb(torch.arange(6)) ** 2).sum().backward()
        opt.step()
    assert torch.equal(emb.weight[[1, 3]], before[[1, 3]])
    assert not torch.isclose(emb.weight[[0, 2, 4, 5]], before[[0, 2, 4, 5]]).any()


def test_letter_stage_stops_once_its_text_accuracy_reaches_until():
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from videocfr.train.world_vlm import LetterStage, letter_stage, world_processor
    from videocfr.vlm.tiny import tiny_config

    torch.manual_seed(0)
    processor = world_processor(0)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(processor.tokenizer, "tiny"))
    head = torch.nn.Linear(model.config.text_config.hidden_size, 1)
    out = letter_stage(model, head, processor.tokenizer, np.random.default_rng(0),
                       LetterStage(steps=1000, batch=2, video_batch=0, until=0.0),
                       match_weight=1.0)
    assert out["steps"] == 100  # reached as soon as 100 steps can be averaged, not the cap
