"""evaluate: frame-selection strategies, QA accuracy under a frame budget, V-NIAH, focus metrics.

Reads caches through `cache_format` only. Modules:

- `evaluate.strategies`: the registry name → function(video, question, n, rng) → sorted
  candidate positions (METHOD §8).

Submodules are not imported here so that `import evaluate` stays cheap.
"""
