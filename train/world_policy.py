"""The world's GRPO policy: the world VLM fine-tuned to answer "<word> <letter>" among many frames.

The world VLM (`train.world_vlm`) is scored by its option letters' logits at one position, so a
sampled completion is one token and every correct completion of a prompt is the same text. Then
the CF term cannot act: the correct completions of a group share α, so λ·r_cov only scales their
common reward, and the group's std normalisation takes that scale out again (`train.grpo`). Real
completions reason before they answer, and correct answers come with different reasoning. The
world's analogue is short: the model first names the answer's word as it reads it from the video
(" red"), then gives the letter (" B"). The two are trained as two reads of the video: in
`word_noise` of the rows the word given before the letter is another option's word, and the
letter target stays the truth, so the letter does not copy the word. A correct letter can then
come with several words, and the CF term can tell which one looked where the prior points.

Samples follow V-NIAH's two needle kinds (`evaluate.vniah.build`): a `sparse` share shows the
asked object on one frame and nothing on the others (as a `frame` needle), the rest one object on
every frame, the asked one on one frame only (as an `overlay` needle among its distractors);
n frames from `frames`. Like the question stages, the tower is frozen and the videos come from
pools of encoded ones (`train.world_pool`). Before any fine-tune, the world VLM's (v5) letter
logits pick the answer of 0.66 of sparse 16-frame questions and 0.19 of overlay ones (64 each,
chance 0.25; a probe outside the repository); trained on overlay videos alone, the policy stayed
at chance (held-out letter 0.26 at 16 and 20 frames after 600 steps). The policy's own figures
before and after: docs/world.md, "Models and artifacts".

    videocfr world policy [--seed 0] [--root caches/world] [--force]

writes `<world dir>/policy` (model, processor, world.json) from `<world dir>/vlm`; the trainer
loads it as model.path (configs/train/world.yaml, `make train`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from videocfr.train.optim import clipped_step, warmup
from videocfr.train.world_pool import VideoPool, reuse_fresh, text_batch
from videocfr.train.world_vision import word_token_ids
from videocfr.train.world_vlm import save_vlm
from videocfr.world.captions import MCQuestion
from videocfr.world.frames import Backgrounds

log = logging.getLogger(__name__)

SEPARATOR = " "  # between the word and the letter: " red B" reads "B" (answer_mode final-letter)


@dataclass(frozen=True)
class PolicyConfig:
    """The fine-tune's settings.

    Args:
        frames: frame counts drawn per step (V-NIAH's K at one candidate per second).
        steps, batch, lr: the optimisation.
        word_noise: the share of rows whose teacher-forced word is another option's word.
        sparse: the share of steps whose videos show one object only (the asked one).
        reuse: how often each encoded video is shown (`world_pool.reuse_fresh`).
        pool_size: encoded videos kept per frame count.
        eval_count: held-out questions per frame count.
        seed: data, init and held-out streams (the held-out one is seed + 1000).
        threads: torch threads.
    """

    frames: tuple[int, ...] = (16, 20)
    steps: int = 600
    batch: int = 16
    lr: float = 1e-3
    word_noise: float = 0.5
    sparse: float = 0.5
    reuse: float = 4.0
    pool_size: int = 256
    eval_count: int = 128
    seed: int = 0
    threads: int = 2


# the objects beside the asked one, per frame (the pool reads these two ranges): one on every
# other frame, as V-NIAH's overlay haystacks, or none, as its frame needles
OVERLAY = SimpleNamespace(distractors=(1, 1), needle_distractors=(0, 0))
SPARSE = SimpleNamespace(distractors=(0, 0), needle_distractors=(0, 0))
KINDS = {"sparse": SPARSE, "overlay": OVERLAY}


def _fps(rng: np.random.Generator) -> float:
    return 1.0  # one candidate per second, as the haystack caches sample them


def completion_ids(tokenizer, questions: list[MCQuestion], words: list[str]) -> torch.Tensor:
    """int64 [B, C]: each row's completion "<word> <letter>" as tokens (one length for all)."""
    sep = tokenizer.encode(SEPARATOR, add_special_tokens=False)
    rows = [[w, *sep, *tokenizer.encode(q.answer, add_special_tokens=False)]
            for w, q in zip(word_token_ids(tokenizer, words), questions)]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("completions of different lengths; each world word and letter must be "
                         "one token")
    return torch.tensor(rows)


def _noisy_words(rng: np.random.Generator, questions: list[MCQuestion], noise: float
                 ) -> tuple[list[str], np.ndarray]:
    """The word given before each letter, and which rows give the true one."""
    words, true = [], rng.random(len(questions)) >= noise
    for q, keep in zip(questions, true):
        others = [o[3:] for o in q.options if o[3:] != q.answer_text]
        words.append(q.answer_text if keep else others[int(rng.integers(len(others)))])
    return words, true


def with_completion(batch: dict, completion: torch.Tensor) -> dict:
    """The prompt batch (left padded) with the completion tokens appended to every row."""
    out = dict(batch)
    ones = torch.ones_like(completion)
    out["input_ids"] = torch.cat([batch["input_ids"], completion], 1)
    out["attention_mask"] = torch.cat([batch["attention_mask"], ones], 1)
    out["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], 0 * ones], 1)
    return out


def policy_loss(model, processor, videos, questions, fps, words, true_word):
    """Teacher-forced cross-entropy of "<word> <letter>": the word on rows that give the true
    one, the separator and the letter on every row.

    Returns:
        (loss, word hits, letter hits) — hits of the argmax at each target position.
    """
    batch = text_batch(processor, videos, questions, fps)
    completion = completion_ids(processor.tokenizer, questions, words)
    c = completion.shape[1]
    logits = model(**with_completion(batch, completion), logits_to_keep=c + 1).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1)
    nll = -logp.gather(2, completion[:, :, None])[:, :, 0]  # (B, C)
    keep = torch.ones_like(nll, dtype=torch.bool)
    keep[:, 0] = torch.from_numpy(true_word)
    loss = nll[keep].mean()
    hits = logits.argmax(-1) == completion
    return loss, hits[:, 0].numpy()[true_word], hits[:, -1].numpy()


@torch.inference_mode()
def evaluate_policy(model, processor, pool: VideoPool, n: int, count: int,
                    batch: int = 32) -> dict:
    """Held-out greedy answers at n frames: the word, the letter after the model's own word,
    and how often the two agree."""
    tok = processor.tokenizer
    model.eval()
    words_right = letters_right = agree = 0
    for start in range(0, count, batch):
        k = min(batch, count - start)
        videos, questions, fps = pool.draw(n, k, np.ones(k, bool), _fps)
        b = text_batch(processor, videos, questions, fps)
        out = model.generate(**b, max_new_tokens=3, do_sample=False)[:, -3:]
        for q, ids in zip(questions, out.tolist()):
            text = tok.decode(ids).split()
            word, letter = (text + ["", ""])[:2]
            words_right += word == q.answer_text
            letters_right += letter == q.answer
            said = [o[0] for o in q.options if o[3:] == word]
            agree += bool(said) and said[0] == letter
    return {"word": words_right / count, "letter": letters_right / count,
            "agree": agree / count, "n": count}


def train_policy(vlm_dir: str | Path, out: str | Path, config: PolicyConfig = PolicyConfig(),
                 vlm_sha256: str | None = None) -> dict:
    """Fine-tune the world VLM at `vlm_dir` into the policy checkpoint `out`.

    Args:
        vlm_sha256: the VLM weights' sha256, recorded so a rebuilt VLM makes the policy stale.

    Returns:
        the figures written to `out/world.json` under "policy": settings, steps, wall_s, the
        last 100 steps' training hits, held-out figures per video kind and frame count
        ("sparse-16", ...) before and after.
    """
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    vlm_dir, out = Path(vlm_dir), Path(out)
    record = json.loads((vlm_dir / "world.json").read_text())
    processor = AutoProcessor.from_pretrained(str(vlm_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(vlm_dir))
    model.model.visual.requires_grad_(False)
    backgrounds = Backgrounds()
    rng = np.random.default_rng(config.seed)
    held = np.random.default_rng(config.seed + 1000)
    pools = {kind: VideoPool(model, processor, backgrounds, rng, settings,
                             capacity=config.pool_size,
                             fresh=reuse_fresh(config.batch, config.reuse))
             for kind, settings in KINDS.items()}
    held_pools = {kind: VideoPool(model, processor, backgrounds, held, settings,
                                  capacity=config.eval_count, fresh=1)
                  for kind, settings in KINDS.items()}

    def evaluate() -> dict:
        return {f"{kind}-{n}": evaluate_policy(model, processor, pool, n, config.eval_count)
                for kind, pool in held_pools.items() for n in config.frames}

    before = evaluate()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    sched = warmup(opt, max(1, config.steps // 10))
    start, word_hits, letter_hits = time.perf_counter(), [], []
    model.train()
    for step in range(config.steps):
        n = int(rng.choice(config.frames))
        pool = pools["sparse" if rng.random() < config.sparse else "overlay"]
        videos, questions, fps = pool.draw(n, config.batch, np.ones(config.batch, bool), _fps)
        words, true = _noisy_words(rng, questions, config.word_noise)
        loss, w, letter = policy_loss(model, processor, videos, questions, fps, words, true)
        clipped_step(opt, sched, loss, params)
        word_hits += w.tolist()
        letter_hits += letter.tolist()
        if (step + 1) % 100 == 0:
            log.info("policy step %d loss %.4f word %.3f letter %.3f", step + 1, loss.item(),
                     np.mean(word_hits[-800:]), np.mean(letter_hits[-1600:]))
    wall = time.perf_counter() - start
    after = evaluate()
    figures = {"vlm_sha256": vlm_sha256, "settings": asdict(config), "steps": config.steps,
               "wall_s": round(wall, 1),
               "train_word_last": float(np.mean(word_hits[-800:])),
               "train_letter_last": float(np.mean(letter_hits[-1600:])),
               "before": before, "eval": after}
    save_vlm(model, processor, out)
    record["policy"] = figures
    tmp = out / "world.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(out / "world.json")  # last: marks the policy complete
    return figures
