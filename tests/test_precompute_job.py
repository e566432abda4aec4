"""The precompute job end to end with the tiny random CLIP: cache contents, failures,
determinism, resume after SIGKILL, skipping without loading the model, configs, the needle."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import videos as clips
from videocfr.cache_format import Cache
from videocfr.cache_format.markers import slurm_defaults
from videocfr.precompute.cli import main
from videocfr.precompute.config import PrecomputeConfig
from videocfr.precompute.job import assign_jobs

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = """\
sampling: {num_frames: 8, short_side: 64}
clip: {model: videocfr-tiny, pretrained: none}
decode: {timeout_s: 120, prefetch: 2}
"""
QUESTION = {"question": "What colour is the screen?", "answer": "A",
            "options": ["A. red", "B. green", "C. blue"]}


def make_dataset(root: Path) -> tuple[Path, Path]:
    """Synthetic clips, a broken file and a missing one; returns (dataset yaml, config yaml).

    Sorted ids: bad, missing, needle, segA, segB, segC -> with 2 jobs, job 0 = bad, needle,
    segB and job 1 = missing, segA, segC.
    """
    vids = root / "videos"
    vids.mkdir(parents=True)
    clips.colour_segments(vids, [20, 45], 60, name="segA.mp4")
    clips.colour_segments(vids, [30], 70, name="segB.mp4")
    clips.colour_segments(vids, [], 40, name="segC.mp4")
    clips.needle_clip(vids, num_frames=200, needle=(90, 110), name="needle.mp4")
    clips.text_as_mp4(vids, name="bad.mp4")
    recs = []
    for vid in ("segA", "segB", "segC", "needle", "bad", "missing"):
        recs.append({"video_id": vid, "video": f"{vid}.mp4", "question_id": "q0", **QUESTION})
    recs.append({"video_id": "segA", "video": "segA.mp4", "question_id": "q1",
                 "question": "How many scenes are there?", "answer": "3"})
    (root / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    ds = root / "ds.yaml"
    ds.write_text("annotation: ann.jsonl\nvideo_root: videos\nformat: native\n")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    return ds, cfg


def shard_hashes(cache: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((cache / "shards").glob("*.h5"))}


def run(ds: Path, cfg: Path, out: Path, *extra: str) -> int:
    return main(["--config", str(cfg), "--dataset", str(ds), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A whole 2-job run, uninterrupted: (root, cache dir)."""
    root = tmp_path_factory.mktemp("ref")
    ds, cfg = make_dataset(root)
    assert run(ds, cfg, root / "cache", "--num-shards", "2") == 0
    return root, root / "cache"


def test_cache_contents(reference):
    _root, cache_dir = reference
    cache = Cache(cache_dir)
    manifest = cache.manifest
    assert manifest["model"] == {"name": "videocfr-tiny", "pretrained": "random"}
    assert manifest["counts"]["videos"] == 6 and manifest["counts"]["failed_videos"] == 2
    assert manifest["counts"]["questions"] == 5 and manifest["counts"]["skipped_questions"] == 2
    versions = manifest["library_versions"]
    assert {"torch", "open_clip", "decord", "scenedetect"} <= set(versions)
    assert manifest["config"]["clip"]["model"] == "videocfr-tiny"
    # where the videos were (outside the config hash): readers find them without a flag
    assert manifest["video_root"] == str((_root / "videos").resolve()) == cache.video_root
    assert "video_root" not in manifest["config"]["dataset"]
    failures = {f["video_id"]: f["error"] for f in manifest["failures"]}
    assert set(failures) == {"bad", "missing"}
    assert "not found" in failures["missing"] and "not a video" in failures["bad"]
    for vid, qid in cache.keys():
        q = cache.question(vid, qid)
        v = cache.video(vid)
        assert q.prior.shape == (8,) == v.frame_indices.shape
        assert abs(float(q.prior.sum(dtype=np.float64)) - 1) < 1e-5
        for name in ("uniform", "scene", "semantic"):
            s = getattr(q, name)
            assert s.min() >= 0 and s.max() <= 1
    seg_a = cache.video("segA")
    assert seg_a.scenes.tolist() == [[0, 20], [20, 45], [45, 60]]  # cuts found
    assert seg_a.scene_rep.sum() == 3  # one representative per scene
    assert seg_a.content_hash == hashlib.sha256(
        (_root / "videos" / "segA.mp4").read_bytes()).hexdigest()
    assert cache.video("bad").status == "failed"


def test_deterministic_shards(reference, tmp_path):
    """Same inputs and config, separate run: byte-identical shards."""
    root, cache_dir = reference
    again = tmp_path / "again"
    assert run(root / "ds.yaml", root / "tiny.yaml", again, "--num-shards", "2") == 0
    first = shard_hashes(cache_dir)
    assert len(first) == 2 and shard_hashes(again) == first


def test_resume_after_sigkill(reference, tmp_path):
    """Kill a precompute subprocess in job 1 (its decode hangs on segA); the rerun skips the
    finished job 0, redoes job 1, and the shards equal those of the uninterrupted run."""
    _root, ref_cache = reference
    ds, cfg = make_dataset(tmp_path / "data")
    out = tmp_path / "cache"
    env = dict(os.environ, VIDEOCFR_DEBUG_DECODE_FAULT="hang:segA.mp4",
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "videocfr.precompute.cli", "--config", str(cfg),
         "--dataset", str(ds), "--out", str(out), "--num-shards", "2"], cwd=REPO, env=env,
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker0 = out / "shards" / "job-00000-of-00002.json"
    try:
        deadline = time.monotonic() + 240
        while not marker0.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "job 0 did not finish in time"
            time.sleep(0.05)
        time.sleep(1.0)  # well into job 1, whose decode hangs
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the subprocess and its decode worker
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "shards" / "job-00001-of-00002.json").exists()
    assert not (out / "manifest.json").exists()

    from videocfr.precompute import job as job_mod

    loads = []

    def counting_factory(clip_cfg):
        loads.append(clip_cfg.model)
        return job_mod.default_embedder(clip_cfg)

    from videocfr.precompute.datasets import load_dataset

    dataset = load_dataset(str(ds))
    config = PrecomputeConfig.load(cfg)
    pre = job_mod.Precomputer(config, dataset, out, 2, embedder_factory=counting_factory)
    assert pre.pending() == [1]
    results = job_mod.run_local(pre, [0, 1])
    assert [r.status for r in results] == ["skipped", "done"] and loads == ["videocfr-tiny"]
    pre.finalize()
    assert shard_hashes(out) == shard_hashes(ref_cache)  # resumed == uninterrupted, bytewise


def test_finished_jobs_skip_without_loading_the_model(reference, monkeypatch, capsys):
    root, cache_dir = reference
    from videocfr.precompute import job as job_mod

    def refuse(_clip_cfg):
        raise AssertionError("the model must not be loaded when every job is done")

    monkeypatch.setattr(job_mod, "default_embedder", refuse)
    before = shard_hashes(cache_dir)
    assert run(root / "ds.yaml", root / "tiny.yaml", cache_dir, "--num-shards", "2") == 0
    assert run(root / "ds.yaml", root / "tiny.yaml", cache_dir, "--num-shards", "2",
               "--shard-index", "1") == 0
    assert shard_hashes(cache_dir) == before
    assert "6 videos (2 failed)" in capsys.readouterr().out


def test_other_config_in_same_dir_is_refused(reference, tmp_path, capsys):
    root, cache_dir = reference
    cfg = tmp_path / "other.yaml"
    cfg.write_text(TINY_CONFIG + "fusion: {preset: videocfr-ref}\n")
    assert run(root / "ds.yaml", cfg, cache_dir, "--num-shards", "2") == 2
    assert "config hash" in capsys.readouterr().err


def test_finalize_names_missing_jobs(reference, tmp_path, capsys):
    root, _ = reference
    out = tmp_path / "partial"
    assert run(root / "ds.yaml", root / "tiny.yaml", out, "--num-shards", "3",
               "--shard-index", "0") == 0
    assert not (out / "manifest.json").exists()
    assert run(root / "ds.yaml", root / "tiny.yaml", out, "--num-shards", "3", "--finalize") == 1
    assert "job index 1, 2" in capsys.readouterr().err


def test_assign_jobs_partitions_sorted_ids():
    ids = ["c", "a", "e", "b", "d"]
    jobs = assign_jobs(ids, 2)
    assert jobs == [["a", "c", "e"], ["b", "d"]]
    assert sorted(sum(assign_jobs(ids, 3), [])) == sorted(ids)
    assert assign_jobs(ids, 7)[6] == []


def test_slurm_defaults():
    assert slurm_defaults({}) == (None, None)
    env = {"SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1"}
    assert slurm_defaults(env) == (8, 4)


def test_config_yaml_strict_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("clip: {model: ViT-B-32, pretrianed: none}\n")
    with pytest.raises(ValueError, match="unknown key 'pretrianed' in config section 'clip'"):
        PrecomputeConfig.load(bad)
    bad.write_text("clips: {model: ViT-B-32}\n")
    with pytest.raises(ValueError, match="unknown section 'clips'"):
        PrecomputeConfig.load(bad)
    bad.write_text("sampling: {num_frames: 7}\n")
    with pytest.raises(ValueError, match="even"):
        PrecomputeConfig.load(bad)


def test_config_dict_round_trip_and_hash():
    from videocfr.cache_format import config_hash

    for name in ("default", "demo", "tiny"):
        cfg = PrecomputeConfig.load(REPO / "configs" / "precompute" / f"{name}.yaml")
        d = cfg.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert PrecomputeConfig.from_dict(d).to_dict() == d
    default = PrecomputeConfig.load(REPO / "configs" / "precompute" / "default.yaml")
    assert default.clip.pretrained == "openai" and default.clip.model == "ViT-B-32"
    demo = PrecomputeConfig.load(REPO / "configs" / "precompute" / "demo.yaml")
    assert demo.clip.pretrained == "none"
    assert config_hash(default.to_dict()) != config_hash(demo.to_dict())
    assert default.with_sampling({"num_frames": 16}).sampling.num_frames == 16
    with pytest.raises(ValueError, match="unknown key 'frames'"):
        default.with_sampling({"frames": 16})


def test_ray_engine_without_ray(reference, capsys):
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray is installed here")
    root, cache_dir = reference
    assert run(root / "ds.yaml", root / "tiny.yaml", root / "ray-cache", "--engine", "ray") == 2
    assert "pip install ray" in capsys.readouterr().err


def test_bad_shard_index(reference, capsys):
    root, _ = reference
    assert run(root / "ds.yaml", root / "tiny.yaml", root / "x", "--num-shards", "2",
               "--shard-index", "2") == 2
    assert "outside [0, 2)" in capsys.readouterr().err


def test_needle_prior(tmp_path):
    """On a decoded needle clip (real decode, scenes and CLIP image tower):

    - the scene source isolates the needle with any weights: it is its own detected scene and
      one of its sampled frames represents it (s = 1);
    - with a query that matches the needle (what a trained CLIP gives for a question about it;
      here the needle frame's own embedding, since random weights give no text semantics) the
      consensus prior puts more mass on the needle frames than uniform does, in both presets.

    With random text weights the needle's semantic score is an outlier of random sign (top or
    bottom of the min-max range, measured on seeds), so no mass claim is made for that case.
    """
    from videocfr.cache_format.fusion import FusionConfig
    from videocfr.precompute.clip import TINY_MODEL, ClipEmbedder
    from videocfr.precompute.decode import SamplingConfig, decode_video
    from videocfr.precompute.saliences import SalienceConfig, question_saliences, scene_salience

    path = clips.needle_clip(tmp_path, num_frames=300, needle=(140, 160))
    dv = decode_video(path, SamplingConfig(num_frames=32, short_side=96))
    needle = (dv.frame_indices >= 140) & (dv.frame_indices < 160)
    assert needle.sum() >= 2
    emb = ClipEmbedder(TINY_MODEL, "none")
    g, p = emb.embed_images(dv.frames)
    sc = scene_salience(g, dv.frame_indices, dv.scenes)
    assert [140, 160] in dv.scenes.tolist()
    assert sc.scene_rep[needle].sum() == 1 and np.all(sc.scene[needle][sc.scene_rep[needle]] == 1)
    query = g[np.flatnonzero(needle)[0]][None]  # (1, D): a query that matches the needle
    for preset in ("cfr", "videocfr-ref"):
        out = question_saliences(sc, g, p, query, SalienceConfig(), FusionConfig(preset=preset))
        assert out.prior[needle].sum() > needle.mean(), preset


def test_recorded_config_holds_a_local_checkpoints_sha256(tmp_path):
    """Other weights at the same checkpoint path (a rebuilt world CLIP) make another config, so
    a cache of the old weights is never resumed or taken as done with the new ones."""
    from types import SimpleNamespace

    from videocfr.cache_format.schema import config_hash
    from videocfr.precompute.config import PrecomputeConfig
    from videocfr.precompute.job import recorded_config

    ckpt, ann = tmp_path / "clip.pt", tmp_path / "ann.jsonl"
    ann.write_text("{}\n")
    dataset = SimpleNamespace(config=SimpleNamespace(name="d", format="native", annotation=ann))
    config = PrecomputeConfig.from_dict({"clip": {"model": "videocfr-tiny",
                                                  "pretrained": str(ckpt)}})
    ckpt.write_bytes(b"weights one")
    first = recorded_config(config, dataset)
    ckpt.write_bytes(b"weights two")
    second = recorded_config(config, dataset)
    assert first["clip"]["pretrained"] == second["clip"]["pretrained"] == str(ckpt)
    assert config_hash(first) != config_hash(second)
    tag = PrecomputeConfig.from_dict({"clip": {"model": "ViT-B-32", "pretrained": "openai"}})
    assert "pretrained_sha256" not in recorded_config(tag, dataset)["clip"]
