"""Focus metrics of a model on a cache (METHOD §8): where does the model look when it answers?

For one question shown n chosen frames, the frozen model answers (greedy, the trainer's Video-R1
prompt); one forward over prompt + answer with hidden states gives its frame usage α over the
n/2 temporal groups (vlm/alpha.py, the trainer's own code: same τ_α, same max-pooled group
features). Reported per question:

- `alpha_entropy`: the entropy of α in nats (0: one group; log(n/2): spread evenly);
- `r_cov`: Σ_g p_g α_g with p the cached consensus prior restricted to the shown frames and
  renormalised (vlm.coverage.coverage, the CF reward's alignment term).

Prior mass on ground-truth frames is V-NIAH's (evaluate/vniah/run.py).
"""

from __future__ import annotations

import numpy as np
from videocfr.vlm.scorer import FrozenScorer, ScoreItem, _even_frames


def shown_prior(prior: np.ndarray, positions: np.ndarray, padded: bool) -> np.ndarray:
    """The prior over the shown frames, renormalised; a padded (repeated) last frame gets 0."""
    p = np.asarray(prior, np.float64)[np.asarray(positions, np.int64)]
    if padded:
        p = np.append(p, 0.0)
    total = p.sum()
    return (p / total if total > 0 else np.full(p.size, 1.0 / p.size)).astype(np.float32)


def focus(scorer: FrozenScorer, item: ScoreItem, prior: np.ndarray, positions: np.ndarray,
          tau_alpha: float = 0.5, max_new_tokens: int = 64) -> dict[str, float]:
    """α entropy and r_cov of the scorer's model answering one question.

    Args:
        scorer: the frozen model.
        item: the question with its chosen frames.
        prior: float [K] the cached consensus prior of the question.
        positions: int64 [n] the chosen candidate positions (the frames of `item`).
        tau_alpha: τ_α of the softmax over groups (the trainer's default 0.5).
        max_new_tokens: answer length cap.

    Returns:
        {"alpha_entropy", "r_cov", "answer_tokens"}; nan values when the answer is empty.
    """
    import torch
    from videocfr.vlm.alpha import alpha_entropy, frame_usage, group_prior, video_group_spans
    from videocfr.vlm.coverage import coverage
    from videocfr.vlm.prompts import build_prompt, problem_type_of

    prompt = build_prompt(item.question, item.options,
                          problem_type_of(item.problem_type, item.options))
    batch = scorer.batch_inputs([item], [prompt])
    model = scorer.model
    with torch.inference_mode():
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    answer = ids.shape[1] - batch["input_ids"].shape[1]
    if answer <= 0:
        return {"alpha_entropy": float("nan"), "r_cov": float("nan"), "answer_tokens": 0}
    inputs = dict(batch)
    inputs["input_ids"] = ids
    pad = torch.ones(1, answer, dtype=batch["attention_mask"].dtype, device=ids.device)
    inputs["attention_mask"] = torch.cat([batch["attention_mask"], pad], dim=1)
    if "mm_token_type_ids" in inputs:  # answer tokens are text
        zeros = torch.zeros(1, answer, dtype=inputs["mm_token_type_ids"].dtype,
                            device=ids.device)
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], zeros], dim=1)
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
    cfg = model.config
    spans = video_group_spans(batch["input_ids"], batch["video_grid_thw"], cfg.video_token_id,
                              cfg.vision_config.spatial_merge_size)
    mask = torch.ones(1, answer, device=ids.device)
    (alpha,) = frame_usage(out.hidden_states[-1], spans, mask, tau_alpha)
    frames, _ = _even_frames(item)
    p_group = group_prior(shown_prior(prior, positions, item.padded))
    a = alpha.float().cpu().numpy()
    return {"alpha_entropy": alpha_entropy(a), "r_cov": coverage(a, p_group),
            "answer_tokens": int(answer), "groups": int(frames.shape[0] // 2)}
