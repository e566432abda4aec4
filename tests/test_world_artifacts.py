"""World artifacts: a missing, stale or altered model is refused with the command to rebuild."""

from __future__ import annotations

import json

import pytest
from videocfr.world import artifacts
from videocfr.world.objects import WORLD_VERSION

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")


def _write_clip(folder, version=WORLD_VERSION, record=True):
    from videocfr.world.clip import register_world_clip

    folder.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model(register_world_clip(), pretrained=None)
    path = folder / artifacts.CLIP_FILE
    torch.save({"state_dict": model.state_dict(), "world": {"world_version": version}}, path)
    if record:
        (folder / artifacts.BUILD_FILE).write_text(json.dumps(
            {"world_version": version, "seed": 0, "clip_sha256": artifacts.sha256_of(path)}))
    return path


def test_missing_build_names_the_file_and_make_world(tmp_path):
    with pytest.raises(artifacts.WorldArtifactError,
                       match="build.json is missing.*videocfr world build --seed 0 --root"):
        artifacts.clip_checkpoint(tmp_path / "none", 0)
    assert artifacts.rebuild_command().startswith("make world")
    with pytest.raises(artifacts.WorldArtifactError, match="clip.pt is missing"):
        artifacts.check_clip_file(tmp_path / "v1-seed3" / "clip.pt")
    with pytest.raises(artifacts.WorldArtifactError, match="--seed 3"):
        artifacts.check_clip_file(tmp_path / "v1-seed3" / "clip.pt")


def test_intact_clip_checkpoint_passes_and_loads_through_precompute(tmp_path):
    from videocfr.precompute.clip import ClipEmbedder, resolve_model

    folder = artifacts.artifact_dir(tmp_path, 0)
    path = _write_clip(folder)
    assert artifacts.clip_checkpoint(tmp_path, 0) == path
    name, source, info = resolve_model("videocfr-world", str(path))
    assert info["pretrained"] == f"file:{artifacts.sha256_of(path)}" and source == str(path)
    emb = ClipEmbedder("videocfr-world", str(path))
    assert emb.model_info == info and emb.embed_dim == 64


def test_altered_clip_is_refused(tmp_path):
    folder = artifacts.artifact_dir(tmp_path, 0)
    path = _write_clip(folder)
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(artifacts.WorldArtifactError, match="altered or replaced.*--force"):
        artifacts.clip_checkpoint(tmp_path, 0)
    from videocfr.precompute.clip import resolve_model

    with pytest.raises(artifacts.WorldArtifactError, match="clip.pt has sha256"):
        resolve_model("videocfr-world", str(path))


def test_clip_of_another_generator_version_is_refused(tmp_path):
    path = _write_clip(tmp_path / "elsewhere", version=WORLD_VERSION - 1, record=False)
    with pytest.raises(artifacts.WorldArtifactError,
                       match=f"version {WORLD_VERSION - 1}.*version {WORLD_VERSION}"):
        artifacts.check_clip_file(path)


def test_expected_sha_from_a_manifest_is_compared(tmp_path):
    path = _write_clip(tmp_path / "x", record=False)
    with pytest.raises(artifacts.WorldArtifactError, match="another world CLIP"):
        artifacts.check_clip_file(path, expected_sha256="0" * 64)


def test_world_vlm_of_another_version_is_refused_by_the_scorer(tmp_path):
    from videocfr.vlm.scorer import FrozenScorer

    vlm = tmp_path / "vlm"
    vlm.mkdir()
    (vlm / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    (vlm / artifacts.VLM_RECORD).write_text(json.dumps({"world_version": WORLD_VERSION + 1}))
    with pytest.raises(artifacts.WorldArtifactError, match="world.json was built by"):
        FrozenScorer.from_pretrained(vlm)


def test_build_trains_both_models_and_keeps_an_intact_build(tmp_path):
    from videocfr.train.world_build import build, summary
    from videocfr.train.world_clip import ClipTrainConfig
    from videocfr.train.world_vlm import LetterStage, Stage, VisionStage, VlmTrainConfig

    vlm = VlmTrainConfig(vision=VisionStage(2, 2, 56, 2, 2),
                         stages=(Stage(2, (2,), match=False), LetterStage(2, 2, video_batch=2),
                                 Stage(2, (2,))),
                         batch=2, eval_per_n=2, eval_frames=(2,))
    record = build(tmp_path, 0, clip_config=ClipTrainConfig(steps=2, batch=4), vlm_config=vlm)
    folder = artifacts.artifact_dir(tmp_path, 0)
    assert record["clip_sha256"] == artifacts.sha256_of(folder / artifacts.CLIP_FILE)
    assert (folder / artifacts.VLM_DIR / "config.json").is_file()
    assert "vlm tower per token" in summary(record)
    stamp = (folder / artifacts.BUILD_FILE).stat().st_mtime_ns
    assert build(tmp_path, 0) == json.loads(json.dumps(record))  # intact: kept, not retrained
    assert (folder / artifacts.BUILD_FILE).stat().st_mtime_ns == stamp
