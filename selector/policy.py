"""The ReFoCUS selector policy (METHOD §7): pick n of K candidate frames, one at a time.

Inputs are what the cache holds: the K candidates' CLIP embeddings, their timestamps and the
question's CLIP text embedding. An encoder (a few transformer layers) reads the candidates
together, each token being frame + time encoding + question + the frame-question cosine, with the
question also as an extra token (the cache holds no option embeddings, so options are no
input). A decoder (causal self-attention over the frames chosen so far, cross-attention to the
encoded candidates) starts from a learned start token; at step t its query scores every candidate
by a pointer (query · key / (sqrt(d) · temperature)), with padding and already chosen candidates
masked, so the n picks are distinct. The chosen positions are returned sorted in time, beside
the per-step log-probs and entropies in the order they were picked (GRPO needs that order).

Batches hold questions of different K: candidates are padded to the batch's largest K and a
boolean mask marks the real ones; a padded slot can never be chosen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

ARCHITECTURE = "refocus-pointer-v1"


@dataclass
class PolicyConfig:
    """Shape of the selector network.

    Args:
        embed_dim: D of the cache's CLIP embeddings (frames and question).
        d_model: width of the transformer layers.
        num_layers: encoder layers (the decoder has as many).
        num_heads: attention heads (must divide d_model).
        ffn_mult: feed-forward width as a multiple of d_model.
        time_freqs: sinusoid frequencies of the time encoding (2 features each).
        temperature: pointer temperature (scores are divided by sqrt(d_model) * temperature).
        dropout: dropout in the transformer layers (0 for RL: rollouts and updates must agree).
    """

    embed_dim: int = 512
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_mult: int = 2
    time_freqs: int = 8
    temperature: float = 1.0
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("embed_dim", "d_model", "num_layers", "num_heads", "ffn_mult", "time_freqs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"policy.d_model={self.d_model} must be a multiple of "
                             f"policy.num_heads={self.num_heads}")
        if self.temperature <= 0 or not 0 <= self.dropout < 1:
            raise ValueError("policy.temperature must be > 0 and policy.dropout in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SelectorBatch:
    """B questions' candidates, padded to the largest K.

    Attributes:
        frames: float32 [B, K, D] candidate embeddings (zeros where padded).
        times: float32 [B, K] candidate times as a fraction of the video's duration, in [0, 1].
        mask: bool [B, K], True for real candidates.
        question: float32 [B, D] question text embeddings.
    """

    frames: torch.Tensor
    times: torch.Tensor
    mask: torch.Tensor
    question: torch.Tensor

    @property
    def num_candidates(self) -> torch.Tensor:
        """int64 [B]: K of each question."""
        return self.mask.sum(dim=1)

    def to(self, device: torch.device | str) -> SelectorBatch:
        return SelectorBatch(*(t.to(device) for t in (self.frames, self.times, self.mask,
                                                      self.question)))

    def repeat(self, times: int) -> SelectorBatch:
        """Each question repeated `times` times in a row (prompt-major: B*times rows)."""
        return SelectorBatch(*(t.repeat_interleave(times, dim=0) for t in
                               (self.frames, self.times, self.mask, self.question)))


def collate(frames: list[np.ndarray], times: list[np.ndarray], questions: list[np.ndarray]
            ) -> SelectorBatch:
    """Pad ragged candidate sets into a SelectorBatch.

    Args:
        frames: B arrays float [K_b, D].
        times: B arrays float [K_b], fractions of the duration in [0, 1].
        questions: B arrays float [D].
    """
    if not frames or not len(frames) == len(times) == len(questions):
        raise ValueError("collate needs the same non-zero number of frames, times and questions")
    dim = int(frames[0].shape[1])
    kmax = max(int(f.shape[0]) for f in frames)
    b = len(frames)
    out_f = np.zeros((b, kmax, dim), np.float32)
    out_t = np.zeros((b, kmax), np.float32)
    mask = np.zeros((b, kmax), bool)
    for i, (f, t) in enumerate(zip(frames, times)):
        k = f.shape[0]
        if f.ndim != 2 or f.shape[1] != dim or t.shape != (k,) or questions[i].shape != (dim,):
            raise ValueError(f"item {i}: frames {f.shape}, times {t.shape}, question "
                             f"{questions[i].shape} do not fit D={dim}")
        out_f[i, :k], out_t[i, :k], mask[i, :k] = f, t, True
    return SelectorBatch(torch.from_numpy(out_f), torch.from_numpy(out_t),
                         torch.from_numpy(mask),
                         torch.from_numpy(np.stack(questions).astype(np.float32)))


@dataclass
class Selection:
    """What the policy chose.

    Attributes:
        order: int64 [B, n], positions in the order they were picked.
        positions: int64 [B, n], the same positions sorted in time.
        logp: float32 [B, n], log-prob of each pick.
        entropy: float32 [B, n], entropy of each step's distribution (over the allowed ones).
    """

    order: torch.Tensor
    positions: torch.Tensor
    logp: torch.Tensor
    entropy: torch.Tensor


def time_encoding(times: torch.Tensor, freqs: int) -> torch.Tensor:
    """Sinusoids of t in [0, 1]: float [..., 2*freqs], frequencies π·2^j (j < freqs)."""
    scale = math.pi * (2.0 ** torch.arange(freqs, dtype=times.dtype, device=times.device))
    angles = times[..., None] * scale  # (..., F)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FrameSelector(nn.Module):
    """Autoregressive pointer network over cached candidates (see the module docstring)."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.frame_in = nn.Linear(config.embed_dim, d)
        self.question_in = nn.Linear(config.embed_dim, d)
        self.time_in = nn.Linear(2 * config.time_freqs, d)
        self.match_in = nn.Linear(1, d)
        self.question_type = nn.Parameter(torch.zeros(d))
        self.start = nn.Parameter(torch.randn(d) * 0.02)
        layer = dict(d_model=d, nhead=config.num_heads, dim_feedforward=config.ffn_mult * d,
                     dropout=config.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer),
                                             config.num_layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer),
                                             config.num_layers)
        self.norm = nn.LayerNorm(d)
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)

    # -- encoder ------------------------------------------------------------------------------
    def encode(self, batch: SelectorBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode candidates and question.

        Returns:
            memory: float [B, K+1, d] (question token first), for the decoder's cross-attention.
            memory_pad: bool [B, K+1], True where padded (PyTorch's key_padding_mask sense).
            keys: float [B, K, d], pointer keys of the candidates.
        """
        q = self.question_in(batch.question)  # (B, d)
        # cosine of each candidate with the question: CLIP's own relevance signal, given
        # explicitly so the layers need not rediscover a bilinear match from scratch
        match = torch.einsum("bkd,bd->bk", nn.functional.normalize(batch.frames, dim=-1),
                             nn.functional.normalize(batch.question, dim=-1))  # (B, K)
        x = (self.frame_in(batch.frames) + self.time_in(time_encoding(batch.times,
                                                                      self.config.time_freqs))
             + self.match_in(match[..., None]) + q[:, None, :])  # (B, K, d)
        tokens = torch.cat([(q + self.question_type)[:, None, :], x], dim=1)  # (B, K+1, d)
        pad = torch.cat([torch.zeros_like(batch.mask[:, :1]), ~batch.mask], dim=1)
        memory = self.encoder(tokens, src_key_padding_mask=pad)
        return memory, pad, self.key(self.norm(memory[:, 1:]))

    def _scores(self, memory, pad, keys, prefix: torch.Tensor) -> torch.Tensor:
        """Pointer scores of every decoder position: float [B, T, K] from prefix [B, T, d]."""
        t = prefix.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=prefix.device), 1)
        h = self.decoder(prefix, memory, tgt_mask=causal, memory_key_padding_mask=pad)
        query = self.query(self.norm(h))  # (B, T, d)
        scale = math.sqrt(self.config.d_model) * self.config.temperature
        return torch.einsum("btd,bkd->btk", query, keys) / scale

    def _prefix(self, memory: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Decoder input: start token, then the encodings of the picks so far. [B, T+1, d]."""
        b = memory.shape[0]
        start = self.start.expand(b, 1, -1)
        if order.shape[1] == 0:
            return start
        picked = torch.gather(memory[:, 1:], 1, order[..., None].expand(-1, -1, memory.shape[-1]))
        return torch.cat([start, picked], dim=1)

    # -- public API ---------------------------------------------------------------------------
    @staticmethod
    def _check_budget(batch: SelectorBatch, n: int) -> None:
        kmin = int(batch.num_candidates.min())
        if not 1 <= n <= kmin:
            raise ValueError(f"budget n={n} must be in [1, K] for every question; the smallest K "
                             f"in this batch is {kmin} (skip questions with K < n before)")

    def _encode_repeated(self, batch: SelectorBatch, repeats: int):
        """Encode each question once, then repeat its encodings for its `repeats` rows."""
        memory, pad, keys = self.encode(batch)
        if repeats == 1:
            return memory, pad, keys, batch.mask
        rep = lambda t: t.repeat_interleave(repeats, dim=0)  # noqa: E731
        return rep(memory), rep(pad), rep(keys), rep(batch.mask)

    def sample(self, batch: SelectorBatch, n: int, *, greedy: bool = False,
               generator: torch.Generator | None = None, repeats: int = 1) -> Selection:
        """Pick n distinct candidates per question.

        Args:
            batch: B questions (every K_b >= n).
            n: frames to pick.
            greedy: take the argmax at each step instead of sampling.
            generator: torch RNG for the sampling (None: the global one).
            repeats: independent selections per question (rows b*repeats .. b*repeats+r-1 of
                the result are question b's); the encoder runs once per question.

        Returns:
            Selection of B*repeats rows; its logp/entropy carry gradients when grad is enabled.
        """
        self._check_budget(batch, n)
        memory, pad, keys, mask = self._encode_repeated(batch, repeats)
        b, k = mask.shape
        allowed = mask.clone()
        order = torch.zeros(b, 0, dtype=torch.long, device=keys.device)
        logps, ents = [], []
        for _ in range(n):
            # the decoder is rerun on the whole prefix (n <= a few dozen: cheap next to a reward)
            scores = self._scores(memory, pad, keys, self._prefix(memory, order))[:, -1]  # (B, K)
            logp_all = torch.log_softmax(scores.masked_fill(~allowed, -torch.inf), dim=-1)
            if greedy:
                pick = logp_all.argmax(dim=-1)
            else:
                pick = torch.multinomial(logp_all.exp().float(), 1, generator=generator)[:, 0]
            logps.append(logp_all.gather(1, pick[:, None])[:, 0])
            ents.append(_entropy(logp_all, allowed))
            allowed = allowed.scatter(1, pick[:, None], False)
            order = torch.cat([order, pick[:, None]], dim=1)
        return Selection(order=order, positions=order.sort(dim=1).values,
                         logp=torch.stack(logps, 1), entropy=torch.stack(ents, 1))

    def log_prob(self, batch: SelectorBatch, order: torch.Tensor, repeats: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies of given pick sequences, in one teacher-forced pass.

        Args:
            batch: B questions.
            order: int64 [B*repeats, n], positions in pick order (distinct, real candidates).
            repeats: rows per question in `order` (as in `sample`).

        Returns:
            logp: float32 [B, n]; entropy: float32 [B, n] (same values as `sample` gave).
        """
        n = order.shape[1]
        self._check_budget(batch, n)
        memory, pad, keys, mask = self._encode_repeated(batch, repeats)
        scores = self._scores(memory, pad, keys, self._prefix(memory, order[:, :-1]))  # (B,n,K)
        b, k = mask.shape
        chosen_before = torch.zeros(b, n, k, dtype=torch.bool, device=order.device)
        onehot = torch.nn.functional.one_hot(order, k).bool()  # (B, n, K)
        chosen_before[:, 1:] = onehot.cumsum(dim=1)[:, :-1].bool()
        allowed = mask[:, None, :] & ~chosen_before  # (B, n, K)
        if not torch.gather(allowed, 2, order[..., None]).all():
            raise ValueError("order picks a padded or an already chosen candidate")
        logp_all = torch.log_softmax(scores.masked_fill(~allowed, -torch.inf), dim=-1)
        return logp_all.gather(2, order[..., None])[..., 0], _entropy(logp_all, allowed)


def _entropy(logp: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """-Σ p log p over the allowed entries (masked ones contribute 0, not NaN)."""
    safe = logp.masked_fill(~allowed, 0.0)
    return -(safe.exp() * safe).masked_fill(~allowed, 0.0).sum(dim=-1)
