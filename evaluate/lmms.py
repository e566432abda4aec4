"""An lmms-eval model that shows a Qwen2.5-VL the frames a videocfr selection file chose.

    lmms-eval --model videocfr_qwen2_5_vl \
        --model_args pretrained=PATH,selection=SEL.json[,cache=CACHE][,fallback=uniform] \
        --tasks videomme --batch_size 1 --log_samples --output_path OUT

Registered without forking lmms-eval through its entry-point group `lmms_eval.models`
(lmms-eval 0.7.3: `lmms_eval.models.registry_v2.ModelRegistryV2.load_entrypoint_manifests`
reads every installed `lmms_eval.models` entry point; ours, in setup.cfg, is `manifests`
below, a `ModelManifest` naming `VideocfrQwen25VL`). `videocfr evaluate lmms-check` says
whether the installed lmms-eval has that mechanism and finds the model.

For each video request the task hands over (its `doc_to_visual` gives the video's path), the
sample is looked up in the selection file (`cache_format.selections`: by the longest stored
path the task's path ends with, then the question by `question_key` or by its text), the file's
sha256 is checked against the content hash precompute recorded, exactly the selected frame
numbers are decoded (`vlm.video.read_frames`, the trainer's decode path) and shown with their
timestamps. A sample whose video is not in the file is an error naming it, unless
`fallback=uniform` asks for n frames evenly spaced over the file instead (logged per video).

Model arguments (besides lmms-eval's batch_size, device): pretrained (a local Qwen2.5-VL
checkpoint, or `tiny` for the tiny random model of vlm/tiny.py), selection (required),
cache (optional: its config hash must equal the file's), fallback, question_key (the task
document's field holding the question id; default question_id), max_num_frames (the task's
frame setting; must equal the file's budget n when given), max_pixels, check_hash (default
true). The chat is the scorer's (vlm.prompts.chat_messages: no system_prompt argument).
One process, one request at a time (batch_size is accepted and not used to batch; no
`accelerate launch` data parallelism yet).

Model family: only Qwen2.5-VL today. The one family-specific call, building the processor
inputs for the chosen frames, their times and the prompt, is `FrozenScorer.batch_inputs`
(vlm/scorer.py), the very call `videocfr evaluate qa` makes, so both show the model the
same input; the model-family adapter will replace that one method (and the checkpoint loading
of `FrozenScorer.from_pretrained`) for Qwen3-VL / Qwen3.5.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from videocfr.cache_format.io import sha256_file
from videocfr.cache_format.selections import Sample, SelectionError, SelectionFile
from videocfr.vlm.scorer import FrozenScorer, ScoreItem

log = logging.getLogger(__name__)

MODEL_NAME = "videocfr_qwen2_5_vl"
TESTED_LMMS_EVAL = "0.7.3"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv")


class LmmsEvalMissing(ImportError):
    """The installed lmms-eval lacks the registration mechanism this wrapper uses."""


def check_lmms_eval():
    """The lmms-eval pieces this wrapper needs: (lmms base class, ModelManifest, version).

    Raises:
        LmmsEvalMissing: lmms-eval absent, or a version without the `lmms_eval.models`
            entry-point registry (before 0.7) — the message says what to install.
    """
    from importlib.metadata import PackageNotFoundError, version

    fix = (f"install the tested version: pip install 'lmms-eval=={TESTED_LMMS_EVAL}' (or "
           f"pip install -e '.[lmms]' in the videocfr checkout)")
    try:
        found = version("lmms_eval")
    except PackageNotFoundError:
        raise LmmsEvalMissing(f"lmms-eval is not installed; {fix}") from None
    try:
        from lmms_eval.api.model import lmms
        from lmms_eval.models.registry_v2 import ModelManifest
    except ImportError as err:
        raise LmmsEvalMissing(
            f"lmms-eval {found} has no entry-point model registry "
            f"(lmms_eval.models.registry_v2.ModelManifest: {err}); {MODEL_NAME} registers "
            f"through the `lmms_eval.models` entry points of lmms-eval >= 0.7; {fix}") from None
    return lmms, ModelManifest, found


def manifests():
    """The `lmms_eval.models` entry point's payload: our ModelManifest."""
    _, manifest_cls, _ = check_lmms_eval()
    return [manifest_cls(model_id=MODEL_NAME,
                         simple_class_path="videocfr.evaluate.lmms.VideocfrQwen25VL")]


class SelectedFrames:
    """Per request: the frames of the selection file for a harness's video path.

    Args:
        selection: the loaded selection file.
        cache_hash: config hash of the cache the user names (checked against the file's).
        fallback: a strategy name for videos not in the file ("uniform"), or None.
        question_key: the task document's field that holds the question id.
        check_hash: compare each video file's sha256 with the recorded content hash.
    """

    def __init__(self, selection: SelectionFile, cache_hash: str | None = None,
                 fallback: str | None = None, question_key: str = "question_id",
                 check_hash: bool = True):
        if cache_hash is not None and cache_hash != selection.config_hash:
            raise SelectionError(
                f"{selection.path} was written from a cache of config hash "
                f"{selection.config_hash}, not the given cache's {cache_hash}; write the "
                f"selection from this cache (`videocfr select --cache ...`) or pass its own cache")
        if fallback not in (None, "", "uniform"):
            from .strategies import STRATEGIES

            known = f" (registry: {sorted(STRATEGIES)})"
            raise SelectionError(f"fallback {fallback!r}: a video missing from {selection.path} "
                                 f"has no cached candidates, so only 'uniform' (n frames evenly "
                                 f"spaced over the file) can choose its frames{known}")
        self.selection = selection
        self.fallback = fallback or None
        self.question_key = question_key
        self.check_hash = check_hash
        self._hashes: dict[str, str] = {}

    def frames(self, video_path: str, doc: dict, context: str
               ) -> tuple[np.ndarray, np.ndarray, str]:
        """Decode the selected frames of one request.

        Returns:
            (uint8 [n, H, W, 3], float64 [n] seconds, a label for logs: "video_id/question_id"
            or "fallback uniform").
        """
        from videocfr.vlm.video import read_frames

        sel = self.selection
        qid = doc.get(self.question_key) if isinstance(doc, dict) else None
        try:
            sample = sel.sample(video_path, None if qid is None else str(qid), context)
        except SelectionError:
            if self.fallback is None or sel.find_video(video_path) is not None:
                raise
            return self._fallback(video_path)
        self._check_content(video_path, sample)
        try:
            frames = read_frames(video_path, sample.frame_indices)
        except ValueError as err:  # indices past the file's end, bad indices
            raise SelectionError(f"{sel.path}: sample {sample.name} (video {video_path}): {err}; "
                                 f"the selection was made for another file: rewrite it with "
                                 f"`videocfr select` on the cache of these videos") from None
        return frames, sample.timestamps, sample.name

    def _check_content(self, video_path: str, sample: Sample) -> None:
        if not self.check_hash:
            return
        got = self._hashes.get(video_path)
        if got is None:
            if not Path(video_path).is_file():
                raise SelectionError(f"video {video_path} of sample {sample.name} not found")
            got = self._hashes[video_path] = sha256_file(video_path)
        if sample.content_hash and got != sample.content_hash:
            raise SelectionError(
                f"{self.selection.path}: sample {sample.name} was selected on a video of content "
                f"hash {sample.content_hash[:16]}..., but {video_path} has {got[:16]}...: "
                f"another file or another version of it. Precompute and select on these "
                f"videos, or point the task at the files the cache was built from "
                f"(check_hash=false skips this check at your own risk)")

    def _fallback(self, video_path: str) -> tuple[np.ndarray, np.ndarray, str]:
        import decord
        from videocfr.vlm.video import read_frames

        from .strategies import uniform_positions

        vr = decord.VideoReader(str(video_path), ctx=decord.cpu(0))
        total, fps = len(vr), float(vr.get_avg_fps()) or 1.0
        n = min(self.selection.n, total)
        idx = uniform_positions(total, n)
        log.warning("video %s is not in %s: fallback uniform, %d frames", video_path,
                    self.selection.path, n)
        return read_frames(video_path, idx), idx / fps, "fallback uniform"


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"expected a boolean (true/false), got {value!r}")
    return text in ("true", "1", "yes")


def _video_path(visuals, doc_id) -> str:
    paths = [v for v in (visuals or []) if isinstance(v, str)
             and v.lower().endswith(VIDEO_SUFFIXES)]
    if len(paths) != 1 or len(paths) != len(visuals or []):
        raise SelectionError(f"document {doc_id}: {MODEL_NAME} takes exactly one video file per "
                             f"request, the task gave {visuals!r}")
    return paths[0]


def _build_class():
    lmms, _, found = check_lmms_eval()
    if found != TESTED_LMMS_EVAL:
        log.warning("lmms-eval %s: %s was tested with %s", found, MODEL_NAME, TESTED_LMMS_EVAL)

    class VideocfrQwen25VL(lmms):
        """lmms-eval simple model: a Qwen2.5-VL on the frames of a videocfr selection file."""

        is_simple = True

        def __init__(self, pretrained: str = "", selection: str = "", cache: str | None = None,
                     fallback: str | None = None, question_key: str = "question_id",
                     max_num_frames: int | None = None, max_pixels: int | None = None,
                     check_hash=True, device: str | None = None, batch_size=1,
                     max_batch_size=None, **unknown) -> None:
            super().__init__()
            if unknown:
                raise ValueError(f"{MODEL_NAME}: unknown model_args {sorted(unknown)}")
            if not pretrained or not selection:
                raise ValueError(f"{MODEL_NAME} needs model_args pretrained=PATH|tiny and "
                                 f"selection=FILE (written by `videocfr select "
                                 f"--selection-file`)")
            sel = SelectionFile(selection)
            if max_num_frames is not None and int(max_num_frames) != sel.n:
                raise SelectionError(
                    f"{sel.path} holds n={sel.n} frames per sample, the task asks for "
                    f"max_num_frames={max_num_frames}; select with `videocfr select --n "
                    f"{max_num_frames}` or set max_num_frames={sel.n}")
            cache_hash = None
            if cache:
                from videocfr.cache_format import Cache

                cache_hash = Cache(cache).config_hash
            self.frames = SelectedFrames(sel, cache_hash, fallback, question_key,
                                         _as_bool(check_hash))
            kw = {"batch_size": 1, "max_pixels": None if max_pixels is None else int(max_pixels)}
            if str(pretrained) == "tiny":
                self.scorer = FrozenScorer.tiny(seed=0, device=device or "cpu", **kw)
            else:
                self.scorer = FrozenScorer.from_pretrained(pretrained, device=device or "auto",
                                                           **kw)
            self.batch_size_per_gpu = int(batch_size or 1)
            self._rank, self._world_size = 0, 1

        @property
        def batch_size(self) -> int:
            return self.batch_size_per_gpu

        def loglikelihood(self, requests):
            raise NotImplementedError(f"{MODEL_NAME} answers generate_until tasks (Video-MME, "
                                      f"MLVU, LongVideoBench, ...), not loglikelihood ones")

        def generate_until_multi_round(self, requests):
            raise NotImplementedError(f"{MODEL_NAME} answers single-turn generate_until tasks")

        def generate_until(self, requests) -> list[str]:
            from tqdm import tqdm

            out = []
            for req in tqdm(requests, desc=MODEL_NAME, unit="request"):
                context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
                gen_kwargs = dict(gen_kwargs or {})
                for key in ("max_num_frames", "num_frames", "nframes"):
                    if key in gen_kwargs and int(gen_kwargs[key]) != self.frames.selection.n:
                        raise SelectionError(
                            f"{self.frames.selection.path} holds n={self.frames.selection.n} "
                            f"frames per sample, task {task} sets {key}={gen_kwargs[key]}; "
                            f"select with `videocfr select --n {gen_kwargs[key]}`")
                doc = self.task_dict[task][split][doc_id]
                path = _video_path(doc_to_visual(doc), doc_id)
                frames, times, label = self.frames.frames(path, doc, context)
                log.debug("%s doc %s: %s frames %s", task, doc_id, label, len(frames))
                out.append(self._answer(frames, times, context, gen_kwargs))
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), out[-1])
            return out

        def _answer(self, frames, times, context: str, gen_kwargs: dict) -> str:
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.pop("max_new_tokens", 256))
            temperature = float(gen_kwargs.pop("temperature", 0) or 0)
            kw = ({"do_sample": True, "temperature": temperature,
                   "top_p": float(gen_kwargs.get("top_p") or 1.0)} if temperature > 0 else {})
            item = ScoreItem(frames, "", [], "", timestamps=times)
            text = self.scorer.generate_prompts([item], [context], max_new, **kw)[0]
            for stop in until:
                if stop and stop != "\n\n":  # Qwen answers often hold blank lines (as lmms-eval)
                    text = text.split(stop)[0]
            return text

    VideocfrQwen25VL.__qualname__ = "VideocfrQwen25VL"
    return VideocfrQwen25VL


def main(argv: list[str] | None = None) -> int:
    """`videocfr evaluate lmms-check`: can the installed lmms-eval find our model? 0 yes, 2 no."""
    from importlib.metadata import entry_points

    try:
        _, _, found = check_lmms_eval()
    except LmmsEvalMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ours = [ep for ep in entry_points().select(group="lmms_eval.models") if ep.name == MODEL_NAME]
    if not ours:
        print(f"error: lmms-eval {found} is installed, but videocfr's `lmms_eval.models` entry "
              f"point {MODEL_NAME!r} is not: reinstall videocfr (pip install -e '.[lmms]') so "
              f"its entry points are written", file=sys.stderr)
        return 2
    from lmms_eval.models import get_model

    cls = get_model(MODEL_NAME)
    print(f"lmms-eval {found}: --model {MODEL_NAME} -> {cls.__module__}.{cls.__qualname__} "
          f"(registered by the `lmms_eval.models` entry point {ours[0].value})")
    return 0


def __getattr__(name: str):
    """`VideocfrQwen25VL` is built on first access, so importing this module needs no
    lmms-eval (the class subclasses lmms-eval's `lmms`)."""
    if name == "VideocfrQwen25VL":
        cls = _build_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
