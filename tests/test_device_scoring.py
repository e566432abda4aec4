"""Scoring on the device: batched CLIP forwards, torch semantic scores, OOM retry, device errors.

The torch path runs on the CPU here (the tiny random CLIP) and must equal the numpy path; the
`gpu` test repeats the comparison on CUDA where a GPU is present.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import videos as clips
from videocfr.precompute.clip import (
    TINY_MODEL,
    ClipEmbedder,
    DeviceFailure,
    is_device_error,
    is_out_of_memory,
    resolve_device,
)
from videocfr.precompute.config import PrecomputeConfig
from videocfr.precompute.saliences import semantic_raw, semantic_raw_device

REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()


def random_embeddings(k=6, t=4, d=16, q=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(k, d)).astype(np.float32),
            rng.normal(size=(k, t, d)).astype(np.float32),
            rng.normal(size=(q, d)).astype(np.float32))


def frames(n, h=48, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)



@pytest.mark.parametrize("aggregation", ["max", "mean"])
@pytest.mark.parametrize("patches", [True, False])
def test_semantic_raw_device_equals_numpy(aggregation, patches):
    g, p, t = random_embeddings()
    counts = [1, 3, 2]
    got = semantic_raw_device(torch.from_numpy(g), torch.from_numpy(p) if patches else None,
                              torch.from_numpy(t), counts, aggregation).numpy()
    assert got.shape == (3, 6) and got.dtype == np.float32
    start = 0
    for i, c in enumerate(counts):
        want = semantic_raw(g, p if patches else None, t[start:start + c], aggregation)
        np.testing.assert_allclose(got[i], want, rtol=0, atol=2e-6)
        start += c


def test_semantic_raw_device_bad_counts():
    g, p, t = (torch.from_numpy(x) for x in random_embeddings())
    with pytest.raises(ValueError, match="query_counts"):
        semantic_raw_device(g, p, t, [2, 2])
    with pytest.raises(ValueError, match="query_counts"):
        semantic_raw_device(g, p, t, [0, 6])


def test_embed_frames_batches_videos_like_embed_images(tiny_clip):
    videos = [frames(3, seed=1), frames(5, 64, 40, seed=2), frames(2, seed=3)]
    g, p = tiny_clip.embed_frames(videos)
    assert g.shape == (10, 16) and p.shape == (10, tiny_clip.num_patches, 16)
    assert g.device == tiny_clip.device and g.dtype == torch.float32
    want = [tiny_clip.embed_images(v) for v in videos]
    np.testing.assert_allclose(g.numpy(), np.concatenate([w[0] for w in want]), atol=1e-5)
    np.testing.assert_allclose(p.numpy(), np.concatenate([w[1] for w in want]), atol=1e-5)
    t = tiny_clip.embed_texts_device(["a", "b c"])
    np.testing.assert_allclose(t.numpy(), tiny_clip.embed_texts(["a", "b c"]), atol=1e-6)


def _inject(monkeypatch, emb, fail):
    """Make emb's image tower raise fail(batch) (an exception or None) before each forward."""
    real = emb._encode_images
    seen = []

    def encode(pixels):
        seen.append(pixels.shape[0])
        err = fail(pixels.shape[0])
        if err is not None:
            raise err
        return real(pixels)

    monkeypatch.setattr(emb, "_encode_images", encode)
    return seen


def test_out_of_memory_halves_the_batch_and_says_so(monkeypatch, caplog):
    emb = ClipEmbedder(TINY_MODEL, "none", batch_size=8)
    video = frames(7)
    want_g, want_p = emb.embed_images(video)
    seen = _inject(monkeypatch, emb, lambda b: torch.OutOfMemoryError("CUDA out of memory. "
                                                                      "Tried to allocate 2 GiB")
                   if b > 2 else None)
    with caplog.at_level(logging.WARNING, logger="videocfr.precompute.clip"):
        g, p = emb.embed_images(video)
    assert emb.batch_size == 2
    assert seen[:3] == [7, 4, 2]  # 8 (7 frames) -> 4 -> 2, then batches of 2
    assert "out of memory on a batch of 8 frames; retrying with batch 4" in caplog.text
    np.testing.assert_allclose(g, want_g, atol=1e-5)
    np.testing.assert_allclose(p, want_p, atol=1e-5)
    # the device path and the text tower retry the same way
    g2, _ = emb.embed_frames([video, video[:3]])
    np.testing.assert_allclose(g2.numpy()[:7], want_g, atol=1e-5)


def test_out_of_memory_at_batch_one_is_a_device_failure(monkeypatch):
    emb = ClipEmbedder(TINY_MODEL, "none", batch_size=2)
    _inject(monkeypatch, emb, lambda b: torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(DeviceFailure, match="out of memory .* even at batch 1"):
        emb.embed_images(frames(3))


def test_other_device_errors_raise_device_failure_and_others_pass(monkeypatch):
    emb = ClipEmbedder(TINY_MODEL, "none", batch_size=2)
    cuda_err = RuntimeError("CUDA error: an illegal memory access was encountered")
    assert is_device_error(cuda_err) and not is_out_of_memory(cuda_err)
    _inject(monkeypatch, emb, lambda b: cuda_err)
    with pytest.raises(DeviceFailure, match="illegal memory access.*rerun"):
        emb.embed_frames([frames(3)])
    assert not issubclass(DeviceFailure, RuntimeError)  # per-video handling must not catch it
    _inject(monkeypatch, emb, lambda b: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        emb.embed_images(frames(3))


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        ClipEmbedder(TINY_MODEL, "none", device="cuda:0")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without CUDA")
def test_cli_device_cuda_without_a_gpu_stops_before_any_work(tmp_path, capsys, monkeypatch):
    from videocfr.precompute.cli import main

    _dataset(tmp_path, batch_size=8)
    (tmp_path / "tiny.yaml").write_text("sampling: {num_frames: 8, short_side: 64}\n"
                                        "clip: {model: videocfr-tiny, pretrained: none}\n")
    started = []
    monkeypatch.setattr("videocfr.precompute.worker.DecodePool.start",
                        lambda *a, **k: started.append(1))
    code = main(["--config", str(tmp_path / "tiny.yaml"), "--dataset", str(tmp_path / "ds.yaml"),
                 "--out", str(tmp_path / "cache"), "--device", "cuda"])
    assert code == 2 and not started
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not list((tmp_path / "cache").glob("shards/*.h5"))


def test_resolve_device_picks_the_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda", env={}) == "cuda:0"
    assert resolve_device("cuda", env={"LOCAL_RANK": "3"}) == "cuda:3"
    assert resolve_device("cuda:2", env={"LOCAL_RANK": "3"}) == "cuda:2"
    with pytest.raises(ValueError, match="asks for GPU 5 but 4 are visible"):
        resolve_device("cuda:5", env={})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA_VISIBLE_DEVICES=i
    assert resolve_device("cuda", env={"LOCAL_RANK": "6"}) == "cuda:0"


def test_gpu_config_loads():
    cfg = PrecomputeConfig.load(REPO / "configs" / "precompute" / "gpu.yaml")
    assert cfg.clip.device == "cuda" and cfg.clip.precision in ("fp16", "bf16")
    assert cfg.clip.batch_size >= 256 and cfg.decode.workers == "auto"
    assert cfg.sampling.decoder == "pyav" and cfg.sampling.num_frames == 32


def test_decode_workers_config(monkeypatch):
    from videocfr.precompute.config import DecodeConfig
    from videocfr.precompute.worker import available_cores, default_workers

    assert default_workers(env={}) == available_cores()
    assert default_workers(env={"LOCAL_WORLD_SIZE": "8"}) == max(1, available_cores() // 8)
    assert DecodeConfig(workers=3).num_workers() == 3
    from videocfr.precompute.worker import MAX_PARTS, DecodePool, _Supervisor

    with DecodePool(num_workers=MAX_PARTS + 2) as pool:  # workers spawn lazily: none here
        assert _Supervisor(pool, []).num_parts == MAX_PARTS  # a video is probed <= 4 times
        assert all(w is None for w in pool.workers)
    for bad in (0, -1, "many", 2.5, True):
        with pytest.raises(ValueError, match="decode.workers"):
            DecodeConfig(workers=bad)
    # speed-only: not recorded, so the config hash is the same whatever the core count
    a = PrecomputeConfig.from_dict({"decode": {"workers": 1}})
    assert "workers" not in a.to_dict()["decode"]
    assert a.to_dict() == PrecomputeConfig.from_dict({"decode": {"workers": "auto"}}).to_dict()


# -- the job --------------------------------------------------------------------------------

def _dataset(root: Path, batch_size: int):
    from videocfr.precompute.datasets import load_dataset

    vids = root / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    clips.colour_segments(vids, [12], 30, name="a.mp4")
    clips.colour_segments(vids, [], 24, size=(96, 160), name="b.mp4")  # portrait
    clips.colour_segments(vids, [8, 20], 34, name="c.mp4")
    clips.text_as_mp4(vids, name="d.mp4")
    recs = []
    for vid in "abcd":
        recs.append({"video_id": vid, "video": f"{vid}.mp4", "question_id": "q0",
                     "question": "What colour?", "answer": "A",
                     "options": ["A. red", "B. green", "C. blue"]})
    recs.append({"video_id": "a", "video": "a.mp4", "question_id": "q1",
                 "question": "How many scenes?", "answer": "2"})
    (root / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (root / "ds.yaml").write_text("annotation: ann.jsonl\nvideo_root: videos\nformat: native\n")
    config = PrecomputeConfig.from_dict({
        "sampling": {"num_frames": 8, "short_side": 64},
        "clip": {"model": TINY_MODEL, "pretrained": "none", "batch_size": batch_size},
        "decode": {"timeout_s": 120, "workers": 1}})
    return config, load_dataset(str(root / "ds.yaml"))


def _records(cache_dir: Path):
    from videocfr.cache_format import Cache

    cache = Cache(cache_dir)
    return cache, {key: cache.question(*key) for key in cache.keys()}


def test_device_scores_in_groups_equal_the_host_path(tmp_path):
    """Videos batched 3 to a forward, scored in torch == one video a forward, numpy scores."""
    from videocfr.precompute.job import Precomputer

    host_cfg, ds = _dataset(tmp_path, batch_size=8)
    pre = Precomputer(host_cfg, ds, tmp_path / "host", device_scores=False)
    pre.run_job(0)
    pre.finalize()
    dev_cfg, _ = _dataset(tmp_path, batch_size=24)
    dev = Precomputer(dev_cfg, ds, tmp_path / "dev", device_scores=True)
    groups = []
    real = dev.process_group
    dev.process_group = lambda g: groups.append([v.video_id for v, _ in g]) or real(g)
    dev.run_job(0)
    dev.finalize()
    assert groups == [["a", "b", "c"], ["d"]]
    host_cache, host = _records(tmp_path / "host")
    dev_cache, got = _records(tmp_path / "dev")
    assert set(host) == set(got) and len(got) == 4  # d failed, so its question is skipped
    for key, q in host.items():
        for name in ("semantic_raw", "semantic", "prior", "scene"):
            np.testing.assert_allclose(getattr(got[key], name), getattr(q, name), atol=1e-4,
                                       err_msg=f"{key} {name}")
        np.testing.assert_allclose(got[key].text_embedding.astype(np.float32),
                                   q.text_embedding.astype(np.float32), atol=1e-3)
    for vid in "abc":
        np.testing.assert_allclose(dev_cache.video(vid).embeddings.astype(np.float32),
                                   host_cache.video(vid).embeddings.astype(np.float32),
                                   atol=1e-3)
    assert dev_cache.video("d").status == "failed"


def test_gpu_failure_mid_job_leaves_the_job_resumable(tmp_path):
    from videocfr.precompute.job import Precomputer, default_embedder

    cfg, ds = _dataset(tmp_path, batch_size=8)
    calls = []

    def failing_factory(clip_cfg):
        emb = default_embedder(clip_cfg)
        real = emb.embed_frames

        def embed_frames(videos):
            calls.append(len(videos))
            if len(calls) == 2:
                raise RuntimeError("CUDA error: unspecified launch failure")
            return real(videos)

        emb.embed_frames = embed_frames
        return emb

    broken = Precomputer(cfg, ds, tmp_path / "cache", embedder_factory=failing_factory,
                         device_scores=True)
    with pytest.raises(DeviceFailure, match="unspecified launch failure.*rerun"):
        broken.run_job(0)
    assert broken.pending() == [0]  # no marker: the job is redone whole
    assert not list((tmp_path / "cache" / "shards").glob("*.h5"))  # nothing half-written
    again = Precomputer(cfg, ds, tmp_path / "cache", device_scores=True)
    assert again.run_job(0).status == "done" and again.pending() == []
    assert again.finalize()["counts"]["videos"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_scores_equal_the_cpu_numpy_path():
    cpu = ClipEmbedder(TINY_MODEL, "none", batch_size=4)
    gpu = ClipEmbedder(TINY_MODEL, "none", device="cuda", batch_size=512, precision="fp32")
    videos = [frames(8, seed=1), frames(6, 64, 40, seed=2)]
    texts = ["a red disc", "a red disc A. red", "a bicycle"]
    g, p = gpu.embed_frames(videos)
    t = gpu.embed_texts_device(texts)
    raw = semantic_raw_device(g[:8], p[:8], t, [1, 2]).cpu().numpy()
    cg, cp = cpu.embed_images(videos[0])
    ct = cpu.embed_texts(texts)
    np.testing.assert_allclose(raw[0], semantic_raw(cg, cp, ct[:1]), atol=1e-4)
    np.testing.assert_allclose(raw[1], semantic_raw(cg, cp, ct[1:]), atol=1e-4)
    half = ClipEmbedder(TINY_MODEL, "none", device="cuda", batch_size=512, precision="fp16")
    hg, hp = half.embed_frames(videos)
    raw16 = semantic_raw_device(hg[:8], hp[:8], half.embed_texts_device(texts), [1, 2])
    np.testing.assert_allclose(raw16.cpu().numpy(), raw, atol=2e-2)
