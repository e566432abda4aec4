"""The frozen VLM scorer: a video LLM of a registered family (vlm.families) shown only the chosen
frames (Qwen2.5-VL, Qwen3-VL, Qwen3.5).

Shared by evaluation (`videocfr evaluate qa`) and the ReFoCUS selector's reward (METHOD §7): one
scorer, not two. Two modes:

- `option_logits` / `margins`: one batched forward, no generation. The prompt asks for the option's
  letter; the logits z of the option letters' tokens at the next position are read, and the margin
  is m = z_correct − max_other z (ReFoCUS's reward is tanh(m / 2)).
- `generate`: the trainer's Video-R1 prompt (think, then `<answer>…</answer>`); answers are scored
  with the shared answer protocol (`vlm.answers`), the one the trainer's rewards use.

Frames: uint8 [n, H, W, 3] in temporal order, decoded at their cached frame indices
(`vlm.video`). Qwen2.5-VL merges two consecutive frames into one temporal group, so an odd
n shows the last frame twice (documented, never silent: `ScoreItem.padded`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LETTER_PROMPT = "Answer with the option's letter from the given choices directly."


@dataclass
class ScoreItem:
    """One question shown with its chosen frames.

    Args:
        frames: uint8 [n, H, W, 3], the chosen frames in temporal order.
        question: the question text.
        options: the options as cached, e.g. ["A. a cat", "B. a dog"] (multiple choice).
        answer: the truth (the letter for multiple choice).
        problem_type: Video-R1 answer type.
        timestamps: float64 [n] seconds of the frames (optional; sets the temporal positions).
    """

    frames: np.ndarray
    question: str
    options: list[str]
    answer: str
    problem_type: str = "multiple choice"
    timestamps: np.ndarray | None = None

    @property
    def padded(self) -> bool:
        """True when the frame count is odd and the last frame is shown twice."""
        return self.frames.shape[0] % 2 == 1

    def letters(self) -> list[str]:
        """The option letters ("A", "B", ...), read from "A. text" options."""
        out = []
        for i, opt in enumerate(self.options):
            head = opt.strip()[:1]
            if not head.isalpha() or not head.isupper():
                raise ValueError(f"option {i} {opt!r} does not start with its capital letter "
                                 f"('A. ...'); the scorer reads option letters")
            out.append(head)
        return out


def letter_prompt(question: str, options: list[str]) -> str:
    """The user text of option-letter scoring: question, "Options:", the options, LETTER_PROMPT.

    Models trained to be scored (the world VLM) train on this very text.
    """
    return question.strip() + "\nOptions:\n" + "\n".join(options) + "\n" + LETTER_PROMPT


def _even_frames(item: ScoreItem) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(item.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames must be uint8 [n >= 1, H, W, 3], got {frames.dtype} "
                         f"{frames.shape}")
    ts = (np.arange(len(frames), dtype=np.float64) if item.timestamps is None
          else np.asarray(item.timestamps, np.float64))
    if item.padded:
        frames = np.concatenate([frames, frames[-1:]])
        ts = np.concatenate([ts, ts[-1:] + (ts[-1] - ts[-2] if len(ts) > 1 else 1.0)])
    return frames, ts


def checkpoint_kind(path: str | Path) -> str:
    """The model_type of a local checkpoint (ValueError naming the path when it is none)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise ValueError(f"{path} is not a model checkpoint directory (no config.json); give the "
                         f"local path of a Qwen2.5-VL checkpoint")
    try:
        doc = json.loads(cfg.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{cfg} is not valid JSON: {err}") from err
    return str(doc.get("model_type", ""))


class FrozenScorer:
    """A frozen video LLM that scores answers from chosen frames.

    Args:
        model: a model of a registered family (put in eval mode, gradients off).
        processor: its processor.
        device: where to run (default: the model's).
        batch_size: questions per forward.
        max_pixels: cap on pixels per frame (the processor's longest_edge), or None.
    """

    def __init__(self, model, processor, *, device=None, batch_size: int = 8,
                 max_pixels: int | None = None):
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device) if device is not None else next(
            model.parameters()).device
        self.model.to(self.device)
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        if max_pixels is not None:
            size = dict(processor.video_processor.size)
            size["longest_edge"] = int(max_pixels)
            processor.video_processor.size = size
        self.batch_size = batch_size

    @property
    def family(self):
        """The model's family adapter (`vlm.families`)."""
        from .families import family_of  # noqa: PLC0415

        return family_of(self.model)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "auto", dtype: str = "auto",
                        **kw) -> FrozenScorer:
        """A local checkpoint of a registered family; bf16 on CUDA, float32 on CPU by default.

        Raises:
            ValueError: not a checkpoint, or its family is not registered (naming those that are).
        """
        import torch
        from transformers import AutoProcessor
        from videocfr.world.artifacts import check_vlm_dir, is_world_vlm

        from .families import family_for_checkpoint

        if is_world_vlm(path):
            check_vlm_dir(path)  # a world VLM of another generator version is refused
        family = family_for_checkpoint(path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
        model = family.from_pretrained(path, dtype=getattr(torch, dtype))
        return cls(model, AutoProcessor.from_pretrained(str(path)), device=device, **kw)

    @classmethod
    def tiny(cls, seed: int = 0, family: str = "qwen2_5_vl", **kw) -> FrozenScorer:
        """The tiny random model of a family (tests, CPU smoke runs; default Qwen2.5-VL's)."""
        from .families import family_named

        model, processor = family_named(family).tiny(seed)
        return cls(model, processor, **kw)

    @classmethod
    def load(cls, spec: str, *, seed: int = 0, **kw) -> FrozenScorer:
        """`tiny` (Qwen2.5-VL), `tiny:<family>` (e.g. tiny:qwen3_vl) or a checkpoint path."""
        spec = str(spec)
        if spec == "tiny" or spec.startswith("tiny:"):
            family = spec.partition(":")[2] or "qwen2_5_vl"
            return cls.tiny(seed=seed, family=family, **kw)
        return cls.from_pretrained(spec, **kw)

    # -- inputs --------------------------------------------------------------------------------
    def batch_inputs(self, items: list[ScoreItem], prompts: list[str]):
        """The processor inputs of items shown with their prompts, on the scorer's device.

        The family's processor call for exactly these frames (`do_sample_frames=False`); their
        seconds (`ScoreItem.timestamps`) reach the families that print per-group times
        (Qwen3-VL, Qwen3.5) as they are; Qwen2.5-VL gets one fps per clip (1 / the median gap).
        An odd frame count repeats the last frame.
        """
        from .prompts import chat_messages

        family = self.family
        videos, metadata = [], []
        for item in items:
            frames, ts = _even_frames(item)
            videos.append(frames)
            metadata.append(family.video_metadata(len(frames), timestamps=ts))
        texts = [self.processor.apply_chat_template(chat_messages(p), add_generation_prompt=True,
                                                    tokenize=False) for p in prompts]
        batch = family.processor_inputs(self.processor, texts, videos, metadata)
        return batch.to(self.device)

    def _letter_ids(self, letters: list[str]) -> list[int]:
        ids = []
        for letter in letters:
            tok = self.processor.tokenizer.encode(letter, add_special_tokens=False)
            if len(tok) != 1:
                raise ValueError(f"option letter {letter!r} is {len(tok)} tokens for this "
                                 f"tokenizer; the scorer needs one token per letter")
            ids.append(tok[0])
        return ids

    # -- scoring -------------------------------------------------------------------------------
    def option_logits(self, items: list[ScoreItem]) -> list[np.ndarray]:
        """Logits of each item's option letters at the answer position.

        Returns:
            float32 [n_options] per item, in the options' order.
        """
        import torch

        out: list[np.ndarray] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            prompts = []
            for item in chunk:
                if not item.options:
                    raise ValueError(f"question {item.question[:60]!r} has no options; logit "
                                     f"scoring needs multiple choice (use generate mode)")
                prompts.append(letter_prompt(item.question, item.options))
            batch = self.batch_inputs(chunk, prompts)
            with torch.inference_mode():
                logits = self.model(**batch).logits[:, -1, :].float()  # (B, V), left padded
            for row, item in enumerate(chunk):
                ids = self._letter_ids(item.letters())
                out.append(logits[row, ids].cpu().numpy().astype(np.float32))
        return out

    def margins(self, items: list[ScoreItem]) -> np.ndarray:
        """m = z_correct − max over the other options of z, per item.

        Returns:
            float32 [B].
        """
        out = np.zeros(len(items), np.float32)
        for i, (item, z) in enumerate(zip(items, self.option_logits(items))):
            letters = item.letters()
            truth = item.answer.strip()
            if truth not in letters:
                raise ValueError(f"answer {item.answer!r} is not one of the option letters "
                                 f"{letters} of question {item.question[:60]!r}")
            k = letters.index(truth)
            others = np.delete(z, k)
            out[i] = z[k] - (others.max() if others.size else 0.0)
        return out

    def generate(self, items: list[ScoreItem], max_new_tokens: int = 256) -> list[str]:
        """Greedy answers to the trainer's Video-R1 prompt (think, then <answer>...</answer>)."""
        from .prompts import build_prompt, problem_type_of

        texts: list[str] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            prompts = [build_prompt(it.question, it.options,
                                    problem_type_of(it.problem_type, it.options)) for it in chunk]
            texts += self.generate_prompts(chunk, prompts, max_new_tokens)
        return texts

    def generate_prompts(self, items: list[ScoreItem], prompts: list[str],
                         max_new_tokens: int = 256, **generate_kw) -> list[str]:
        """Answers to given user texts (one batch; greedy unless `generate_kw` says otherwise)."""
        import torch

        batch = self.batch_inputs(items, prompts)
        generate_kw = {"do_sample": False, **generate_kw}
        with torch.inference_mode():
            ids = self.model.generate(**batch, max_new_tokens=max_new_tokens, **generate_kw)
        new = ids[:, batch["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)

    def generate_scores(self, items: list[ScoreItem], max_new_tokens: int = 256
                        ) -> tuple[list[str], np.ndarray]:
        """Generated answers and their Video-R1 accuracy (vlm.answers.answer_accuracy)."""
        from .answers import answer_accuracy, extract_answer

        texts = self.generate(items, max_new_tokens)
        acc = np.array([answer_accuracy(extract_answer(t), it.answer, it.problem_type,
                                        options=it.options)
                        for t, it in zip(texts, items)], np.float32)
        return texts, acc
