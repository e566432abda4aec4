"""Fine-tune a config-built tiny Qwen2.5-VL on the world's video QA (METHOD §9).

The model reads n frames and a multiple-choice question about one object ("What colour is the
triangle?"); the asked object is in one frame, distractors that never share the asked key are in
the others. It is trained on the frozen scorer's exact prompt (question, "Options:", the options,
the letter instruction: `vlm.scorer.letter_prompt`), with the loss on the option letters'
logits at the answer position — the logits `FrozenScorer.option_logits` reads — so the scorer's
margin is the quantity trained. Samples without the needle (the answer cannot be seen) are
trained toward a uniform distribution over the letters, so the margin says "I cannot see it"
where it cannot.

Training runs the vision stage (`train.world_vision`: the tower taught each object's colour and
shape per merged token, through logits tied to the words' embeddings), then the curriculum
`STAGES` with the tower frozen: reading one object in two frames (letter and answer-word losses),
the letter lookup (`LetterStage`: the answer as a text hint, one-object videos beside the text,
until the lookup has formed), one object with every loss, then two or four frames with
distractors and a fifth of the samples without the needle. The question stages draw their
videos from a pool of encoded ones (`train.world_pool`: the frozen tower runs once per video,
each showing asks a new question). Measured (`make world`): docs/world.md, "Version 5".

`VlmTrainConfig.text_around` puts the question both before and after the video
(`chat_template(text_around=True)`), so the video tokens can attend to the asked key. From an
earlier experiment's partly trained language model it learnt the find among distractors faster
than the video-first layout; from a fresh one the letter lookup did not form in eight runs, so
it is not the default (docs/world.md, "The question around the video"). The tokenizer is the
tiny byte-level BPE retrained on the world's prompts (`world_tokenizer`: every world word one
token), so the sequence stays short.

What it leaves out: any language ability beyond the world's questions; it is evidence about the
mechanism (answers when the needle is shown, guesses when not), not a video LLM.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from videocfr.train.optim import clipped_step, warmup
from videocfr.train.world_pool import (
    VideoPool,
    even_frames,
    option_letter_ids,
    prompt_text,
    reuse_fresh,
)
from videocfr.train.world_pool import text_batch as pooled_batch
from videocfr.train.world_vision import (
    VisionStage,
    WordHead,
    evaluate_tokens,
    group_labels,
    qa_groups,
    vision_loss,
    vision_stage,
    word_token_ids,
)
from videocfr.vlm.prompts import chat_messages
from videocfr.vlm.scorer import letter_prompt
from videocfr.vlm.tiny import chat_template, tiny_config, tiny_processor, tiny_tokenizer
from videocfr.world.captions import ASKED, LETTERS, QUESTION_TEMPLATES, MCQuestion, make_question
from videocfr.world.frames import Backgrounds
from videocfr.world.objects import (
    COLOURS,
    SHAPES,
    WORLD_VERSION,
    WorldObject,
    sample_object,
)
from videocfr.world.samples import VideoQA, video_qa

log = logging.getLogger(__name__)

WORLD_MAX_PIXELS = 28 * 28 * 60  # a 16:9 frame becomes 168 x 280 px: 12 x 20 patches of 14 px
WORLD_MIN_PIXELS = 28 * 28 * 48  # smaller frames are scaled up: an object spans 2-3 patches


def world_corpus(rng: np.random.Generator, n: int = 400) -> list[str]:
    """Chat-templated prompts of world questions (the tokenizer's training text)."""
    tok = tiny_tokenizer()
    texts = []
    for _ in range(n):
        obj = WorldObject(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), 0.2, .5, .5)
        asked = ASKED[int(rng.integers(2))]
        vocab = list(COLOURS) if asked == "colour" else list(SHAPES)
        opts = [f"{LETTERS[i]}. {v}" for i, v in enumerate(rng.permutation(vocab)[:4])]
        q = QUESTION_TEMPLATES[asked].format(colour=obj.colour, shape=obj.shape)
        texts.append(tok.apply_chat_template(chat_messages(letter_prompt(q, opts)),
                                             add_generation_prompt=True, tokenize=False))
    return texts


def world_tokenizer(seed: int = 0, vocab_size: int = 512, text_around: bool = False):
    """The tiny byte-level tokenizer retrained (BPE merges) on world prompts.

    Returns:
        PreTrainedTokenizerFast with the same byte alphabet and Qwen special tokens as
        `tiny_tokenizer()`, Qwen's chat template (`text_around`: the question before and after
        the video, `world_processor`); option letters stay one token each.
    """
    base = tiny_tokenizer()
    tok = base.train_new_from_iterator(world_corpus(np.random.default_rng(seed)), vocab_size)
    tok.chat_template = chat_template(text_around)
    tok.padding_side = "left"
    for letter in LETTERS[:4]:
        if len(tok.encode(letter, add_special_tokens=False)) != 1:
            raise AssertionError(f"letter {letter!r} is not one token after retraining")
    return tok


def world_processor(seed: int = 0, text_around: bool = False):
    """A Qwen2.5-VL processor with the world tokenizer and the world pixel budget.

    Args:
        text_around: a chat template that puts the question both before and after the video
            (`chat_template(text_around=True)`): the video tokens can attend to the asked key,
            and the options after the video can be matched against what was seen. The layout
            is saved with the checkpoint, so every path that prompts the model uses it.
    """
    from transformers import Qwen2_5_VLProcessor

    base = tiny_processor()
    size = {"shortest_edge": WORLD_MIN_PIXELS, "longest_edge": WORLD_MAX_PIXELS}
    base.image_processor.size = dict(size)
    base.video_processor.size = dict(size)
    tokenizer = world_tokenizer(seed, text_around=text_around)
    return Qwen2_5_VLProcessor(image_processor=base.image_processor, tokenizer=tokenizer,
                               video_processor=base.video_processor,
                               chat_template=tokenizer.chat_template)


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: `steps` steps of samples drawn with these settings."""

    steps: int
    n_frames: tuple[int, ...] = (2,)
    distractors: tuple[int, int] = (0, 0)
    needle_distractors: tuple[int, int] = (0, 0)
    no_needle: float = 0.0  # fraction of samples without the needle (uniform target)
    size: tuple[float, float] | None = None  # object size from .. to over the stage (None: world's)
    hint: float = 0.0  # fraction of samples whose question ends with "Hint: <answer>." (text only)
    match: bool = True  # the option-match loss on (False: the letter and answer-word losses alone)


@dataclass(frozen=True)
class LetterStage:
    """The letter lookup learnt on text: the scorer's letter prompt, the answer given as a hint
    ("What colour is the triangle? Hint: red."), loss on the four letters' logits plus the
    option-match loss (`VlmTrainConfig.match_weight`). Beside each text batch, `video_batch`
    one-object two-frame videos keep the reading (letter and answer-word losses, no match loss,
    no hint) — the lookup then carries over to what the model reads.

    Measured with the video before the question (version 4): text alone
    (benchmarks/world_vlm_probe.py): without the match loss the language
    model stays at chance for 2,500 steps of 64; with it, 0.92 after 600 steps of 32. After a
    reading stage, text alone wiped the reading (answer word 0.95 -> 0.13); it came back in one
    run of two. With the video batches beside it the reading stays (0.90-0.97); whether the
    lookup carries over to the videos varied: video letter 0.83-0.89 within 350 steps in two
    runs that had seen hinted videos before, 0.70, 0.31 and 0.29 (version 4's build) after a
    plain reading stage (docs/world.md).

    Args:
        steps: the most steps (the stage ends sooner once `until` is reached).
        batch, lr: text questions per step and the stage's AdamW learning rate.
        video_batch: one-object videos per step beside the text (0: text alone).
        until: stop once the text accuracy over the last 100 steps reaches it (None: `steps`).
        match_layer: the hidden states the option-match head reads (an index of
            `hidden_states`: 1 is after the first layer, -1 the last). Measured (version 5):
            read after the first layer, the text lookup left chance by steps 400-500 in two
            seeds, one of which stayed at chance through 1,100 steps with the last layer
            (docs/world.md "Version 5"); the layers above can then read which option matched.
    """

    steps: int = 600
    batch: int = 32
    lr: float = 2e-3
    video_batch: int = 16
    until: float | None = None
    match_layer: int = 1


# The curriculum (measured, docs/world.md "The question curriculum"): reading one object first
# (no match loss), the letter lookup on text beside one-object videos until it has formed (its
# text accuracy leaves chance after 300 to 1,100 steps, depending on the seed: docs/world.md
# "Version 5"), one object with every loss, then distractors and samples without the needle —
# the longest stage: the find among distractors kept improving with steps (version 4's 800 gave
# 0.425 held out at n = 4; 3,000 more from that checkpoint 0.80-0.86, docs/world.md).
STAGES: tuple[Stage | LetterStage, ...] = (
    Stage(300, (2,), match=False),
    LetterStage(1200, until=0.9),
    Stage(400, (2,)),
    Stage(2000, (2, 4), (0, 2), (0, 1), no_needle=0.2),
)
READING = Stage(1, (2,), match=False)  # the letter stage's video batches: one object, two frames


@dataclass(frozen=True)
class VlmTrainConfig:
    """How the world VLM is trained.

    Args:
        vision: the tower taught colour and shape per token first (None: skip it).
        stages: the curriculum after the vision stage: question stages (`Stage`: steps and
            sample settings) and the letter lookup (`LetterStage`), in order.
        batch: samples per step.
        lr: AdamW learning rate of each question stage (its own optimizer, a linear warmup over
            30 steps, then constant: the settings the curriculum was measured with).
        weight_decay: AdamW weight decay.
        shape: the model's shape (a key of vlm.tiny.SHAPES).
        frame_size: (W, H) of the generated frames.
        seed: data stream, tokenizer corpus and init (held-out data use another stream).
        threads: torch CPU threads.
        eval_per_n: held-out samples per frame count in the final evaluation.
        eval_frames: the frame counts evaluated.
        word_weight: weight of the auxiliary loss that asks the answer position for the answer
            word itself (" red") over the whole vocabulary, on samples that show the needle: it
            trains seeing before matching the seen word to an option's letter (without it a
            from-scratch model sits at chance: two hops, no signal for the first).
        match_weight: weight of the option-match loss (`qa_loss`), in every stage that has
            `match` on.
        train_tower: whether the question stages train the vision tower too. Measured: trained
            there at lr 2e-3, the tower's per-token shape accuracy fell from 0.84 to 0.49 even
            with the vision loss beside the answer's (`make world`, version 3's first build);
            frozen, the question stages learn faster (docs/world.md).
        vision_weight: weight of the vision stage's per-token loss kept in the question stages
            (on the question batch's own frames), where `train_tower` lets them change it.
        train_embeddings: whether the stages after the vision stage train the colour and shape
            words' input embeddings. False keeps them where the vision stage tied the tower's
            tokens to them (the other tokens' embeddings train); measured: trained there, the
            tokens' shape accuracy through the words fell from 0.94 to 0.33-0.50, and the VLM
            ended at chance in one run of two (docs/world.md).
        text_around: the question before and after the video (`world_processor`); with
            `init`, it must match the checkpoint's template (refused otherwise).
        reuse: how many times, on average, a question stage shows each video it encodes, each
            time with a new question (`train.world_pool`); 1 encodes a fresh batch every step.
            Only with the tower frozen (`train_tower` False) and stages without a moving size.
        pool_size: encoded videos a stage keeps per frame count when `reuse` > 1.
    """

    vision: VisionStage | None = VisionStage()
    stages: tuple[Stage | LetterStage, ...] = STAGES
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    shape: str = "world"
    frame_size: tuple[int, int] = (224, 126)
    seed: int = 0
    threads: int = 1
    eval_per_n: int = 200
    eval_frames: tuple[int, ...] = field(default=(4, 8))
    word_weight: float = 1.0
    match_weight: float = 1.0
    train_tower: bool = False
    vision_weight: float = 1.0
    train_embeddings: bool = False
    text_around: bool = False
    reuse: float = 4.0
    pool_size: int = 256


def _fps(rng: np.random.Generator) -> float:
    """A frame rate between 0.05 and 4 (log-uniform): cached timestamps have any spacing."""
    return float(math.exp(rng.uniform(math.log(0.05), math.log(4.0))))


def hinted(question: MCQuestion) -> MCQuestion:
    """The question with "Hint: <answer>." after it: the letter lookup without vision."""
    return dataclasses.replace(
        question, question=f"{question.question} Hint: {question.answer_text}.")


def with_hint(sample: VideoQA) -> VideoQA:
    """The sample with its question `hinted`."""
    return dataclasses.replace(sample, question=hinted(sample.question))


def make_batch(processor, samples: list[VideoQA], fps: list[float]):
    """The processor batch of samples (left padded) and the option-letter token ids [B, 4]."""
    from transformers.video_utils import VideoMetadata

    texts = [prompt_text(processor, s.question) for s in samples]
    videos, metadata = [], []
    for s, f in zip(samples, fps):
        frames = even_frames(s.frames)  # the scorer shows an odd count's last frame twice
        videos.append(frames)
        metadata.append(VideoMetadata(total_num_frames=len(frames), fps=f,
                                      frames_indices=list(range(len(frames)))))
    processor.tokenizer.padding_side = "left"
    batch = processor(text=texts, videos=videos, video_metadata=metadata,
                      do_sample_frames=False, padding=True, return_tensors="pt")
    return batch, option_letter_ids(processor.tokenizer, [s.question for s in samples])


def option_positions(input_ids, letter_ids):
    """(rows, cols, option index) of every option's word: the token after "<letter>." in the
    last options block of each row (each world word is one token; the text-around template
    shows the options before and after the video, and only the copy after it can see it)."""
    import torch

    letters = torch.tensor(letter_ids)
    is_letter = torch.isin(input_ids[:, :-2], letters)
    last = {}
    for r, c in is_letter.nonzero().tolist():
        last[r, letter_ids.index(int(input_ids[r, c]))] = c + 2
    rows, which = zip(*last) if last else ((), ())
    return torch.tensor(rows), torch.tensor(list(last.values())), torch.tensor(which)


def qa_loss(model, match_head, batch, letter_ids, truth, seen, match_weight: float,
            match_layer: int = -1):
    """The answer loss of a question batch and its parts.

    The letter loss reads the option letters' logits at the answer position: the answer's letter
    where the needle is shown, a uniform target where it is not. The option-match loss asks each
    option's word position, through `match_head` on the last hidden state, whether it is the
    answer (binary cross-entropy; shown needles only): the lookup is learnt in two one-hop parts
    — which option is right, where that option's letter is — instead of one two-hop part.

    Args:
        match_layer: the `hidden_states` index the match head reads (-1: the last layer's).

    Returns:
        (loss, letter logits [B, n_options], logits at the answer position [B, V])
    """
    import torch
    import torch.nn.functional as F

    out = model(**batch, output_hidden_states=match_weight > 0, logits_to_keep=1)
    full = out.logits[:, -1, :].float()
    z = torch.gather(full, 1, letter_ids)
    logp = torch.log_softmax(z, dim=-1)
    nll = -logp.gather(1, truth[:, None])[:, 0]
    loss = torch.where(seen, nll, -logp.mean(-1)).mean()
    if match_weight > 0 and bool(seen.any()):
        rows, cols, which = option_positions(batch["input_ids"], letter_ids[0].tolist())
        keep = seen[rows]
        h = out.hidden_states[match_layer][rows[keep], cols[keep]]
        target = (which[keep] == truth[rows[keep]]).float()
        loss = loss + match_weight * F.binary_cross_entropy_with_logits(
            match_head(h.float())[:, 0], target)
    return loss, z, full


def text_batch(tokenizer, questions: list[MCQuestion]):
    """Tokenized text-only letter prompts (left padded) and their letter ids [B, n_options]."""

    texts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": letter_prompt(
            q.question, q.options)}]}],
        add_generation_prompt=True, tokenize=False) for q in questions]
    tokenizer.padding_side = "left"
    return (dict(tokenizer(texts, return_tensors="pt", padding=True)),
            option_letter_ids(tokenizer, questions))


def letter_stage(model, match_head, tokenizer, rng: np.random.Generator, stage: LetterStage,
                 match_weight: float, video=None) -> dict:
    """The letter stage (see `LetterStage`).

    Args:
        video: a callable returning (loss, letter hits, answer-word hits) of a fresh video batch,
            added to each step's text loss (None: text alone).

    Returns:
        its steps, wall time and training accuracy over its last 100 steps (text; with `video`,
        the video batches' letter and answer word too).
    """
    import torch

    params = list(model.parameters()) + list(match_head.parameters())
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.01)
    sched = warmup(opt, max(1, stage.steps // 10))
    start, hits, letters, words = time.perf_counter(), [], [], []
    model.train()
    for step in range(stage.steps):
        questions = [hinted(make_question(rng, sample_object(rng))) for _ in range(stage.batch)]
        batch, ids = text_batch(tokenizer, questions)
        truth = torch.tensor([LETTERS.index(q.answer) for q in questions])
        seen = torch.ones(len(questions), dtype=torch.bool)
        loss, z, _ = qa_loss(model, match_head, batch, ids, truth, seen, match_weight,
                             stage.match_layer)
        if video is not None:
            extra, letter_hits, word_hits = video()
            loss = loss + extra
            letters.append(float(np.mean(letter_hits)))
            words.append(float(np.mean(word_hits)))
        clipped_step(opt, sched, loss, params)
        hits.append(float((z.argmax(-1) == truth).float().mean()))
        if (step + 1) % 100 == 0:
            log.info("letter step %d loss %.4f text accuracy %.3f video letter %.3f word %.3f",
                     step + 1, loss.item(), np.mean(hits[-100:]), np.mean(letters[-100:] or 0),
                     np.mean(words[-100:] or 0))
        if stage.until is not None and len(hits) >= 100 and np.mean(hits[-100:]) >= stage.until:
            break
    out = {"steps": len(hits), "wall_s": round(time.perf_counter() - start, 1),
           "train_accuracy_last100": float(np.mean(hits[-100:]))}
    if video is not None:
        out.update(video_letter_last100=float(np.mean(letters[-100:])),
                   video_word_last100=float(np.mean(words[-100:])))
    return out


def answer_logits(model, batch):
    """float [B, V]: the logits at the answer position (the last one: batches are left padded)."""
    return model(**batch, logits_to_keep=1).logits[:, -1, :]


def letter_logits(model, batch, letter_ids):
    """float [B, n_options]: the answer position's logits of each sample's option letters."""
    import torch

    return torch.gather(answer_logits(model, batch), 1, letter_ids)


def evaluate_needle(model, processor, backgrounds: Backgrounds, rng: np.random.Generator,
                    n_frames: int, count: int, needle: bool, batch: int = 16) -> dict:
    """Held-out accuracy and mean margin at n frames, with or without the needle frame."""
    import torch

    right, margins = 0, []
    model.eval()
    with torch.inference_mode():
        for start in range(0, count, batch):
            samples = [video_qa(rng, backgrounds, n_frames, needle=needle, distractors=(0, 2),
                                needle_distractors=(0, 1))
                       for _ in range(min(batch, count - start))]
            b, ids = make_batch(processor, samples, [_fps(rng) for _ in samples])
            z = letter_logits(model, b, ids).float()
            truth = torch.tensor([LETTERS.index(s.question.answer) for s in samples])
            right += int((z.argmax(-1) == truth).sum())
            top_other = z.scatter(1, truth[:, None], float("-inf")).amax(-1)
            margins += (z.gather(1, truth[:, None])[:, 0] - top_other).tolist()
    return {"accuracy": right / count, "margin": float(np.mean(margins)), "n": count}


def question_loss(model, match_head, word_head, processor, backgrounds: Backgrounds,
                  rng: np.random.Generator, stage: Stage, config: VlmTrainConfig,
                  progress: float = 0.0, pool: VideoPool | None = None):
    """The loss of one batch drawn with the stage's settings.

    Args:
        progress: how far through the stage (0..1): where `stage.size` is between its ends.
        pool: draw the videos from these encoded ones, each with a new question
            (`train.world_pool`; None: fresh videos through the processor and the tower).

    Returns:
        (loss, letter hits, answer-word hits): the hits bool arrays over the samples that show
        the needle without a hint.
    """
    import torch

    n = int(rng.choice(stage.n_frames))
    needles = rng.random(config.batch) >= stage.no_needle
    hint_rows = (rng.random(config.batch) < stage.hint) & needles
    samples = None
    if pool is not None:
        videos, questions, fps = pool.draw(n, config.batch, needles, _fps)
        questions = [hinted(q) if h else q for q, h in zip(questions, hint_rows)]
        b = pooled_batch(processor, videos, questions, fps)
        ids = option_letter_ids(processor.tokenizer, questions)
    else:
        size = None if stage.size is None else float(
            stage.size[0] + (stage.size[1] - stage.size[0]) * progress)
        samples = [video_qa(rng, backgrounds, n, needle=bool(k), distractors=stage.distractors,
                            needle_distractors=stage.needle_distractors, size=size)
                   for k in needles]
        samples = [with_hint(x) if h else x for x, h in zip(samples, hint_rows)]
        questions = [s.question for s in samples]
        b, ids = make_batch(processor, samples, [_fps(rng) for _ in samples])
    truth = torch.tensor([LETTERS.index(q.answer) for q in questions])
    seen = torch.from_numpy(needles)
    words = torch.tensor(word_token_ids(processor.tokenizer, [q.answer_text for q in questions]))
    match_weight = config.match_weight if stage.match else 0.0
    loss, z, full = qa_loss(model, match_head, b, ids, truth, seen, match_weight)
    if config.word_weight > 0 and bool(seen.any()):
        loss = loss + config.word_weight * torch.nn.functional.cross_entropy(
            full[seen], words[seen])
    if config.train_tower and config.vision_weight > 0:
        labels = group_labels([qa_groups(x) for x in samples], b["video_grid_thw"])
        loss = loss + config.vision_weight * vision_loss(
            model, word_head, b["pixel_values_videos"], b["video_grid_thw"], labels)[0]
    with torch.no_grad():
        keep = (seen & ~torch.from_numpy(hint_rows)).numpy()
        return (loss, (z.argmax(-1) == truth).numpy()[keep],
                (full.argmax(-1) == words).numpy()[keep])


def stage_pool(model, processor, backgrounds: Backgrounds, rng: np.random.Generator,
               stage: Stage, config: VlmTrainConfig) -> VideoPool | None:
    """The stage's pool of encoded videos, or None where each batch must be fresh: `reuse` 1,
    a tower trained in the question stages (its tokens change), a size that moves over the
    stage. It is filled with no more videos than the stage would encode fresh."""
    if config.reuse <= 1 or config.train_tower or stage.size is not None:
        return None
    fresh = reuse_fresh(config.batch, config.reuse)
    return VideoPool(model, processor, backgrounds, rng, stage, capacity=config.pool_size,
                     fresh=fresh, fill=min(config.pool_size, stage.steps * fresh + config.batch))


def question_stage(model, match_head, word_head, processor, backgrounds: Backgrounds,
                   rng: np.random.Generator, stage: Stage, config: VlmTrainConfig) -> dict:
    """One question stage (see `Stage`) with its own AdamW; returns its steps, wall time and
    training accuracies (letter, answer word) over its last 100 steps, on samples that show
    the needle without a hint."""
    import torch
    from tqdm import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    params += [*match_head.parameters(), word_head.background]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    sched = warmup(opt, 30)
    start, letter_hits, word_hits = time.perf_counter(), [], []
    pool = stage_pool(model, processor, backgrounds, rng, stage, config)
    model.train()
    for i in tqdm(range(stage.steps), desc="world vlm", unit="step", mininterval=10):
        loss, letters, words = question_loss(model, match_head, word_head, processor,
                                             backgrounds, rng, stage, config,
                                             i / max(1, stage.steps - 1), pool)
        clipped_step(opt, sched, loss, params)
        letter_hits += letters.tolist()
        word_hits += words.tolist()
        if (i + 1) % 50 == 0:
            log.info("step %d loss %.3f train accuracy (needle shown, last 50 steps): letter "
                     "%.3f, answer word %.3f", i + 1, loss.item(),
                     np.mean(letter_hits[-50 * config.batch:] or [0]),
                     np.mean(word_hits[-50 * config.batch:] or [0]))
    last = 100 * config.batch  # about the last 100 steps' shown-needle samples
    return {"steps": stage.steps, "wall_s": round(time.perf_counter() - start, 1),
            "train_letter_last100": float(np.mean(letter_hits[-last:] or [0])),
            "train_word_last100": float(np.mean(word_hits[-last:] or [0]))}


def freeze_rows(weight, rows: list[int]) -> None:
    """Keep these rows of an embedding matrix fixed under any optimizer: their gradient is zeroed
    by a hook (Adam's update of a zero gradient is zero; AdamW's decoupled decay still shrinks
    them by lr x weight_decay a step: 1e-5 to 2e-5 here)."""
    import torch

    mask = torch.ones(weight.shape[0], 1, dtype=weight.dtype)
    mask[rows] = 0
    weight.register_hook(lambda grad: grad * mask)


def save_vlm(model, processor, out: Path) -> None:
    """save_pretrained of model and processor into `out` (generation ids set)."""
    out.mkdir(parents=True, exist_ok=True)
    text = model.config.text_config
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = text.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)


def train_vlm(config: VlmTrainConfig, out: str | Path, init: str | Path | None = None,
              spare_core=None) -> dict:
    """Train the world VLM and save it (model + processor) as an HF checkpoint folder.

    Args:
        config: the training settings.
        out: the checkpoint folder to write.
        init: a world VLM checkpoint folder to continue from (default: a fresh random model).
        spare_core: a callable that turns True once a job beside this one has finished; from
            then on the vision stage, and each stage that starts after that, run on
            `config.threads + 1` threads (measured: a question step takes 0.20 s on two threads
            against 0.32 s on one).

    Returns:
        the figures written to `out/world.json`: world_version, seed, params, steps, wall_s,
        per frame count the held-out accuracy and margin with and without the needle, chance.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if init is None:
        processor = world_processor(config.seed, config.text_around)
        model = Qwen2_5_VLForConditionalGeneration(tiny_config(processor.tokenizer, config.shape))
    else:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(init))
        if processor.chat_template != chat_template(config.text_around):
            layout = "the question around the video" if config.text_around else "video first"
            raise ValueError(f"text_around={config.text_around} asks for {layout}, but the "
                             f"checkpoint {init} was trained on another prompt layout (its "
                             f"processor's chat template); set text_around to match it")
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(init))
    backgrounds = Backgrounds(size=config.frame_size)
    seeds = np.random.SeedSequence([config.seed, WORLD_VERSION, 1]).spawn(2)
    rng, held_out = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    match_head = torch.nn.Linear(model.config.text_config.hidden_size, 1)  # dropped at save
    word_head = WordHead(model, processor.tokenizer)  # dropped at save
    vision = None
    if config.vision is not None:
        vision = vision_stage(model, word_head, processor, backgrounds, rng, config.vision,
                              lambda r: video_qa(r, backgrounds, 2), spare_core)
        log.info("world VLM vision stage: %s", vision)
    if vision is not None:
        save_vlm(model, processor, Path(out))  # a checkpoint to continue the question stages from
    model.model.visual.requires_grad_(config.train_tower)
    if not config.train_embeddings:
        freeze_rows(model.get_input_embeddings().weight, word_token_ids(
            processor.tokenizer, [*COLOURS, *SHAPES]))
    start = time.perf_counter()
    stages = []
    for stage in config.stages:
        torch.set_num_threads(config.threads + int(spare_core is not None and spare_core()))
        if isinstance(stage, LetterStage):
            reading = dataclasses.replace(config, batch=stage.video_batch)
            video = None if stage.video_batch == 0 else functools.partial(
                question_loss, model, match_head, word_head, processor, backgrounds, rng,
                READING, reading, pool=stage_pool(model, processor, backgrounds, rng,
                                                  dataclasses.replace(READING, steps=stage.steps),
                                                  reading))
            stages.append(letter_stage(model, match_head, processor.tokenizer, rng, stage,
                                       config.match_weight, video))
        else:
            stages.append(question_stage(model, match_head, word_head, processor, backgrounds,
                                         rng, stage, config))
        log.info("world VLM stage %d: %s", len(stages), stages[-1])
        save_vlm(model, processor, Path(out))  # each finished stage: a checkpoint to continue from
    wall = time.perf_counter() - start
    figures = {"world_version": WORLD_VERSION, "seed": config.seed,
               "config": asdict(config), "wall_s": round(wall, 1),
               "steps": sum(s["steps"] for s in stages),
               "params": int(sum(p.numel() for p in model.parameters())),
               "vision": vision, "stages": stages, "chance": 0.25, "eval": {},
               "tokens": evaluate_tokens(model, word_head, processor, [
                   video_qa(held_out, backgrounds, 2) for _ in range(48)])}
    for n in config.eval_frames:
        figures["eval"][str(n)] = {
            "needle": evaluate_needle(model, processor, backgrounds, held_out, n,
                                      config.eval_per_n, True),
            "no_needle": evaluate_needle(model, processor, backgrounds, held_out, n,
                                         config.eval_per_n, False)}
    out = Path(out)
    save_vlm(model, processor, out)
    (out / "world.json").write_text(json.dumps(figures, indent=1))
    log.info("world VLM: %s", json.dumps(figures["eval"]))
    return figures
