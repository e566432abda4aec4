"""CF-GRPO trainer (VideoCFR) and the ReFoCUS frame-selection trainer.

Math core (METHOD.md §4-6), importable without a model or a GPU:

- `train.alpha`: the model's frame usage α from the policy forward pass's hidden states.
- `train.rewards`: Video-R1 accuracy / format rewards and the consensus-frame (CF) reward.
- `train.temporal`: T-GRPO's temporal rule and the length reward (docs/rewards.md).
- `train.grpo`: group-normalised advantages and the token-level clipped GRPO loss
  (`loss_type` sequence | token).
- `train.tiny`: a tiny random Qwen2.5-VL model and an offline processor (tests, `make train` tiny).

Submodules are not imported here so that `import train` stays cheap (no torch/transformers).
"""
