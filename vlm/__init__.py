"""vlm: the video-LLM protocol that train and evaluate share (they never import each other).

- `vlm.prompts`: Video-R1's prompt templates, problem types and chat message.
- `vlm.answers`: answer parsing and the per-type accuracy scores (R_acc).
- `vlm.video`: the cached sampled frames of a video, decoded by their stored indices.
- `vlm.alpha`: the model's frame usage α from a forward pass's hidden states (Qwen2.5-VL spans).
- `vlm.coverage`: r_cov between α and the grouped prior (numpy only).
- `vlm.clip_views`: an open_clip image tower's pooled embedding and per-location tokens in the
  joint space (precompute's embedder and the world CLIP's trainer read the same views).
- `vlm.scorer`: the frozen VLM scorer (option log-likelihoods, generate mode).
- `vlm.tiny`: a tiny random Qwen2.5-VL model and an offline processor (tests, tiny configs).

It sits below the stages and above `cache_format` only. Submodules are not imported here so
that `import videocfr.vlm` stays cheap (no torch/transformers).
"""
