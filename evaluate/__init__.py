"""evaluate: frame-selection strategies, QA accuracy under a frame budget, V-NIAH, focus metrics.

Reads caches through `cache_format` and shares the video-LLM protocol (prompts, answer scoring,
frames at cached indices, the frozen scorer) with the trainer through `videocfr.vlm`; it never
imports `train`. Modules:

- `evaluate.strategies`: the registry name → function(video, question, n, rng) → sorted
  candidate positions (METHOD §8).

Submodules are not imported here so that `import evaluate` stays cheap.
"""
