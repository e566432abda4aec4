"""precompute: decode, scenes, CLIP, prior sources and fusion, the shard job and its CLI.

Run it as `videocfr precompute --config CFG --dataset NAME|PATH --out CACHE_DIR`
(see precompute/cli.py); the cache it writes is read through `cache_format`.
"""
