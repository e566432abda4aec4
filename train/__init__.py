"""CF-GRPO trainer (VideoCFR): rewards, GRPO, the DeepSpeed step.

Math core (METHOD.md §4-6), importable without a model or a GPU:

- `train.rewards`: the accuracy / format rewards (scored by `vlm.answers`) and the
  consensus-frame (CF) reward (α from `vlm.alpha`, r_cov from `vlm.coverage`).
- `train.temporal`: T-GRPO's temporal rule and the length reward (docs/rewards.md).
- `train.grpo`: group-normalised advantages and the token-level clipped GRPO loss
  (`loss_type` sequence | token).

The video-LLM protocol it shares with evaluation (prompts, answers, frames at cached indices,
tiny models) is `videocfr.vlm`; the ReFoCUS selector trainer is its own stage,
`videocfr.selector`. Submodules are not imported here so that `import train` stays cheap.
"""
