"""CLIP embeddings of frames and texts with open_clip (METHOD §2: global and patch views).

`ClipEmbedder` loads any open_clip model by name with a pretrained tag, a local checkpoint file,
or random weights (`pretrained="none"`, only when asked: a cache built so says "random" in its
manifest). Frames are preprocessed the way the model's own transform does it (shortest side
resized bicubic, centre crop, mean/std normalisation), but on tensors and batched.

Patch tokens are per-location tokens in the joint image-text space (`vlm.clip_views`): a ViT's
output tokens through the same `ln_post` and `proj` as the pooled token, or a ModifiedResNet's
last feature map through its attention pool's value and output projections; they can be
compared with text embeddings by cosine.

On a GPU the embeddings stay on the device (`embed_frames`, `embed_texts_device`): frames of
many videos go through one large forward (pinned host memory, non-blocking copy), the semantic
scores are computed there (precompute/saliences.semantic_raw_device) and only what the cache
stores comes back to the host. A forward that runs out of GPU memory is retried with half the
batch (logged); any other CUDA error raises `DeviceFailure`, which stops the shard job (no
marker is written, so the job is redone whole when rerun).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from typing import Any

import numpy as np
from videocfr.vlm import clip_views

logger = logging.getLogger(__name__)

TINY_MODEL = "videocfr-tiny"
# A tiny open_clip architecture for tests and CI: built with random weights in milliseconds.
TINY_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                   "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}
RANDOM = "none"  # the `pretrained` value that asks for random weights
# The world's CLIP (videocfr.world.clip, METHOD §9): trained by `videocfr world build`.
WORLD_CLIP = "videocfr-world"
PRECISIONS = ("fp32", "fp16", "bf16")
# Messages of CUDA failures that are not out-of-memory: the device is gone or corrupt, and every
# following video would fail too, so the job stops instead of writing failed records.
_DEVICE_ERRORS = ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "cuDNN error",
                  "device-side assert", "NCCL error", "CUDA driver")


class DeviceFailure(Exception):
    """The CLIP device failed (a CUDA error, or out of memory even at batch 1).

    Not a RuntimeError on purpose: the job's per-video error handling (which turns a bad video
    into a failed record) lets it through, so the shard job stops without its marker and is
    redone whole on the next run.
    """


def is_out_of_memory(err: BaseException) -> bool:
    """True for torch's out-of-memory error (CUDA or other accelerators)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(err, oom) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def is_device_error(err: BaseException) -> bool:
    """True for a CUDA/accelerator failure other than out-of-memory."""
    import torch

    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None and isinstance(err, accel):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _DEVICE_ERRORS)


def resolve_device(device: str, env: dict | None = None) -> str:
    """The torch device a process uses for `clip.device`, checked before any work.

    "cuda" means this process's GPU: cuda:LOCAL_RANK when LOCAL_RANK is set and several GPUs
    are visible (torchrun-style launches), else cuda:0 (the usual one-GPU-per-process launch
    with CUDA_VISIBLE_DEVICES=i). "cuda:N" is taken as given. The config keeps "cuda", so every
    shard process of a node records the same config.

    Raises:
        ValueError: a CUDA device without CUDA (no GPU, no driver, or a CPU-only torch build),
            or an index past the visible GPUs; the message says how to fix it.
    """
    import torch

    device = str(device)
    if not device.startswith("cuda"):
        return device
    env = os.environ if env is None else env
    if not torch.cuda.is_available():
        raise ValueError(
            f"clip.device is {device!r} but torch sees no CUDA GPU (torch.cuda.is_available() "
            f"is False: no GPU on this machine, no driver, CUDA_VISIBLE_DEVICES empty, or a "
            f"CPU-only torch build {torch.__version__}). Run on a GPU node, or use --device cpu "
            f"with clip.precision fp32 (configs/precompute/default.yaml)")
    count = torch.cuda.device_count()
    if device == "cuda":
        rank = env.get("LOCAL_RANK")
        index = int(rank) if rank not in (None, "") and count > 1 else 0
    else:
        try:
            index = int(device.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"clip.device {device!r} is not a device; use cpu, cuda or "
                             f"cuda:N") from None
    if not 0 <= index < count:
        raise ValueError(f"clip.device {device!r} (LOCAL_RANK={env.get('LOCAL_RANK')}) asks for "
                         f"GPU {index} but {count} are visible (CUDA_VISIBLE_DEVICES="
                         f"{env.get('CUDA_VISIBLE_DEVICES')!r}); give each process one GPU "
                         f"with CUDA_VISIBLE_DEVICES=i and clip.device: cuda")
    return f"cuda:{index}"


def register_tiny_model() -> str:
    """Register the tiny "videocfr-tiny" open_clip config (idempotent) and return its name."""
    from open_clip import factory

    # open_clip's registry is a dict rebuilt from config files by `add_model_config`; a rescan
    # drops entries added in memory, so every resolve re-registers through this function.
    factory._MODEL_CONFIGS[TINY_MODEL] = copy.deepcopy(TINY_MODEL_CONFIG)
    return TINY_MODEL


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(model_name: str, pretrained: str) -> tuple[str, str | None, dict[str, str]]:
    """Check a model name and pretrained source; the one place names are resolved.

    Args:
        model_name: an open_clip architecture ("ViT-B-32"), "videocfr-tiny", "videocfr-world"
            (its checkpoint is checked by world.artifacts.check_clip_file), or an
            "hf-hub:org/repo" / "local-dir:/path" model (weights come with it).
        pretrained: an open_clip tag ("openai", "laion2b_s34b_b79k", ...), a local checkpoint
            file, or "none" for random weights.

    Returns:
        (model_name, pretrained argument for open_clip.create_model or None, model info
        {"name", "pretrained": tag | "random" | "file:<sha256>"}).

    Raises:
        ValueError: unknown model or tag, listing what is available.
    """
    import open_clip

    if model_name == TINY_MODEL:
        register_tiny_model()
    if model_name == WORLD_CLIP:
        from videocfr.world.clip import register_world_clip

        register_world_clip()
        if pretrained not in (RANDOM, "", "random"):
            # a world checkpoint must exist, match this generator version and its build record's
            # sha256: never a silent random model or a stale one
            from videocfr.world.artifacts import check_clip_file

            digest = check_clip_file(pretrained)
            return model_name, pretrained, {"name": model_name, "pretrained": f"file:{digest}"}
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return model_name, None, {"name": model_name, "pretrained": model_name}
    if model_name not in open_clip.list_models():
        raise ValueError(f"Model config for {model_name!r} not found. Available: "
                         f"{open_clip.list_models()} (or 'hf-hub:org/repo', 'local-dir:PATH')")
    if pretrained in (RANDOM, "", "random"):
        return model_name, None, {"name": model_name, "pretrained": "random"}
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained in tags:
        return model_name, pretrained, {"name": model_name, "pretrained": pretrained}
    if os.path.isfile(pretrained):
        return model_name, pretrained, {"name": model_name,
                                        "pretrained": f"file:{file_sha256(pretrained)}"}
    raise ValueError(f"pretrained={pretrained!r} for {model_name!r} is neither a known tag nor a "
                     f"checkpoint file. Available tags: {tags}; or give a file path, or 'none' "
                     f"for random weights")


class ClipEmbedder:
    """Frame and text embeddings from one open_clip model.

    Args:
        model_name: open_clip architecture name (see `resolve_model`).
        pretrained: tag, local checkpoint path, or "none" (random weights, logged as a WARNING;
            seeded with `seed` so two runs build the same model).
        device: torch device string ("cpu", "cuda", "cuda:1"; see `resolve_device`).
        batch_size: frames (or texts) per forward pass; halved (and logged) when a forward
            runs out of GPU memory.
        precision: "fp32", "fp16" or "bf16" (the half types only on CUDA).
        seed: torch seed of the random initialisation when pretrained is "none".
    """

    def __init__(self, model_name: str, pretrained: str, device: str = "cpu",
                 batch_size: int = 32, precision: str = "fp32", seed: int = 0):
        import open_clip
        import torch

        if batch_size < 1:
            raise ValueError(f"clip.batch_size must be >= 1, got {batch_size}")
        if precision not in PRECISIONS:
            raise ValueError(f"clip.precision {precision!r} unknown; use one of {PRECISIONS}")
        if precision != "fp32" and not str(device).startswith("cuda"):
            raise ValueError(f"clip.precision {precision!r} needs a CUDA device; use fp32 on "
                             f"{device}")
        device = resolve_device(device)  # a clear error before the model is built
        name, source, self.model_info = resolve_model(model_name, pretrained)
        if self.model_info["pretrained"] == "random":
            logger.warning("CLIP %s built with RANDOM weights (pretrained=%r): embeddings and "
                           "priors carry no semantics; the cache says so in its manifest",
                           name, pretrained)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = open_clip.create_model(name, pretrained=None)
        else:
            model = open_clip.create_model(name, pretrained=source)
        self.device = torch.device(device)
        self.pin_memory = self.device.type == "cuda"  # page-locked uploads, copied async
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16,
                      "bf16": torch.bfloat16}[precision]
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.batch_size = batch_size  # lowered for good when a batch runs out of memory
        self.tokenizer = open_clip.get_tokenizer(name)
        visual = self.model.visual
        clip_views.check_tower(visual, name)
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg.get("size", visual.image_size)
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.interpolation = cfg.get("interpolation", "bicubic")
        self._mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)

    @property
    def embed_dim(self) -> int:
        """D, the joint embedding dimension."""
        return int(self.model.visual.output_dim)

    # -- images ------------------------------------------------------------------------------

    def preprocess(self, frames: np.ndarray):
        """The model's own image transform, on a batch of frames.

        Args:
            frames: uint8 [B, H, W, 3] RGB.

        Returns:
            torch float [B, 3, S, S] on the device, normalised like the model's transform.
        """
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(frames))
        if self.pin_memory:
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
        th, tw = self.image_size
        h, w = x.shape[-2:]
        mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
        if self.resize_mode == "squash":
            x = F.interpolate(x, size=(th, tw), mode=mode, antialias=True, align_corners=False)
        else:
            # "shortest" (open_clip's default): shortest side to the target, then centre crop;
            # "longest" pads instead, which frames rarely want, so it is treated as shortest.
            scale = max(th / h, tw / w)
            nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
            if (nh, nw) != (h, w):
                x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True,
                                  align_corners=False)
            top, left = (nh - th) // 2, (nw - tw) // 2
            x = x[:, :, top:top + th, left:left + tw]
        x = x.clamp_(0.0, 1.0)
        return ((x - self._mean) / self._std).to(self.dtype)

    def _project(self, tokens):
        """A ViT's ln_post and proj on its transformer output tokens [B, N, W] (the map that
        gives its pooled token; `vlm.clip_views.project_vit_tokens`)."""
        return clip_views.project_vit_tokens(self.model.visual, tokens)

    def _encode_images(self, pixels):
        """(pooled [B, D], patch tokens [B, T, D]) from preprocessed pixels, unnormalised
        (`vlm.clip_views.image_views`: the pooled embedding is the model's own)."""
        return clip_views.image_views(self.model.visual, pixels)

    def _chunked(self, n: int, step, what: str) -> list:
        """[step(start, stop) for consecutive chunks of [0, n)], batch_size items per chunk.

        A chunk that runs out of device memory is retried with half the batch (logged; the
        smaller batch is kept for the rest of the run). Any other device error raises
        DeviceFailure; other errors propagate unchanged.
        """
        out, start = [], 0
        while start < n:
            size = self.batch_size
            try:
                out.append(step(start, min(n, start + size)))
            except DeviceFailure:
                raise
            except Exception as err:  # noqa: BLE001 - classified below, re-raised if unknown
                self._handle_device_error(err, size, what)
                continue
            start += size
        return out

    def _handle_device_error(self, err: Exception, size: int, what: str) -> None:
        """Halve the batch after an out-of-memory error; raise DeviceFailure or `err` otherwise."""
        import torch

        if is_out_of_memory(err):
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if size <= 1:
                raise DeviceFailure(
                    f"{self.device} ran out of memory embedding {what} even at batch 1; free "
                    f"the GPU (another process on it?) or use a smaller model") from err
            self.batch_size = max(1, size // 2)
            logger.warning("%s out of memory on a batch of %d %s; retrying with batch %d (set "
                           "clip.batch_size <= %d to avoid the retry)", self.device, size, what,
                           self.batch_size, self.batch_size)
            return
        if is_device_error(err):
            raise DeviceFailure(
                f"the CLIP device {self.device} failed while embedding {what}: "
                f"{str(err).strip().splitlines()[0][:300]}. The shard job stops unfinished (no "
                f"marker is written); check the GPU (nvidia-smi) and rerun the same command to "
                f"redo the job") from err
        raise err

    def embed_images(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global and projected patch-token embeddings of frames (on the host).

        Args:
            frames: uint8 [K, H, W, 3] RGB.

        Returns:
            (global float32 [K, D], patch_tokens float32 [K, T, D]), both L2-normalised along D
            (T = number of ViT patches).
        """
        import torch
        import torch.nn.functional as F

        _check_frames(frames)

        def step(start: int, stop: int):
            pooled, tokens = self._encode_images(self.preprocess(frames[start:stop]))
            return (F.normalize(pooled.float(), dim=-1).cpu().numpy(),
                    F.normalize(tokens.float(), dim=-1).cpu().numpy())

        with torch.inference_mode():
            chunks = self._chunked(frames.shape[0], step, "frames")
        if not chunks:
            d, t = self.embed_dim, self.num_patches
            return np.zeros((0, d), np.float32), np.zeros((0, t, d), np.float32)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def embed_frames(self, videos: list[np.ndarray]):
        """Embeddings of the frames of several videos, in large forwards, left on the device.

        Each video's frames are uploaded (pinned memory on CUDA) and preprocessed on the device
        (videos may differ in size); the preprocessed frames of all videos then go through the
        image tower `batch_size` at a time.

        Args:
            videos: uint8 [K_i, H_i, W_i, 3] RGB frames per video.

        Returns:
            (global float32 [sum K_i, D], patch tokens float32 [sum K_i, T, D]) torch tensors on
            the device, L2-normalised along D, in video order.
        """
        import torch
        import torch.nn.functional as F

        for frames in videos:
            _check_frames(frames)
        with torch.inference_mode():
            pixels = [self.preprocess(v) for v in videos]  # (K_i, 3, S, S) each
            pixels = torch.cat(pixels) if pixels else torch.zeros(
                (0, 3, *self.image_size), dtype=self.dtype, device=self.device)

            def step(start: int, stop: int):
                pooled, tokens = self._encode_images(pixels[start:stop])
                return F.normalize(pooled.float(), dim=-1), F.normalize(tokens.float(), dim=-1)

            chunks = self._chunked(pixels.shape[0], step, "frames")
        if not chunks:
            d, t = self.embed_dim, self.num_patches
            return (torch.zeros((0, d), device=self.device),
                    torch.zeros((0, t, d), device=self.device))
        return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])

    @property
    def num_patches(self) -> int:
        """T, patch tokens per frame."""
        return clip_views.num_tokens(self.model.visual)

    # -- texts -------------------------------------------------------------------------------

    def embed_texts_device(self, texts: list[str]):
        """Text embeddings left on the device: torch float32 [N, D], L2-normalised."""
        import torch
        import torch.nn.functional as F

        def step(start: int, stop: int):
            tokens = self.tokenizer(list(texts[start:stop]))
            feats = self.model.encode_text(tokens.to(self.device))
            return F.normalize(feats.float(), dim=-1)

        with torch.inference_mode():
            out = self._chunked(len(texts), step, "texts")
        if not out:
            return torch.zeros((0, self.embed_dim), device=self.device)
        return torch.cat(out)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Text embeddings.

        Args:
            texts: N strings (truncated to the model's context length by its tokenizer).

        Returns:
            float32 [N, D], L2-normalised.
        """
        return self.embed_texts_device(texts).cpu().numpy()


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [K, H, W, 3], got {frames.dtype} "
                         f"{frames.shape}")
