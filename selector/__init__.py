"""ReFoCUS (METHOD §7): a frame-selection policy trained with GRPO over cached CLIP embeddings.

- `policy`: the autoregressive pointer network (`FrameSelector`) and batching of ragged K.
- `grpo`: one GRPO step over N sampled subsets per question, entropy bonus, curriculum over n.
- `rewards`: rewards as plain callables — the VLM margin reward tanh(m/2) from the frozen scorer
  (vlm.scorer) and a needle reward from annotated needle frames.
- `data`: questions of a cache (with the optional Var(m) filter from the `margins` addition).
- `trainer` / `cli`: `videocfr train --config configs/train/refocus_tiny.yaml`.
- `margins`: `videocfr precompute margins` (the data filter's addition).
- `select`: the `refocus` evaluate strategy and `videocfr select`.
- `synthetic`: needle data for tests, the learning curve and the benchmark.
- `pairs`: the complementary-pair task (one A and one B frame needed: the picks must condition
  on each other), written as caches for the trainer, with its reward and baselines.
"""
