"""`videocfr cache re-fuse`: new priors from stored saliences, a new config hash, bad saliences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic_cache import resign_values
from videocfr.cache_format import Cache, FusionConfig, PriorTable, SchemaError, fuse, verify_cache
from videocfr.cache_format.fusion import fuse_record
from videocfr.cache_format.re_fuse import RE_FUSED_FROM, fusion_from_cli, re_fuse_cache

from videocfr.cli import main


@pytest.fixture
def source(synthetic_cache) -> Path:
    return synthetic_cache("src", n_videos=5, n_questions=3, max_videos=2)


def test_re_fuse_ref_preset_matches_fusion_and_records_its_source(source, tmp_path):
    out = tmp_path / "ref"
    manifest = re_fuse_cache(source, out, FusionConfig(preset="videocfr-ref"))
    src, new = Cache(source), Cache(out)
    assert verify_cache(out) == []
    assert new.config[RE_FUSED_FROM] == src.config_hash
    assert new.config_hash != src.config_hash
    assert new.config["fusion"]["preset"] == "videocfr-ref"
    assert {k: v for k, v in new.config.items() if k not in ("fusion", RE_FUSED_FROM)} == {
        k: v for k, v in src.config.items() if k != "fusion"}
    assert manifest["counts"] == src.manifest["counts"]
    assert [f["video_id"] for f in manifest["failures"]] == ["bad000"]
    assert sorted(new.keys()) == sorted(src.keys())
    for vid, qid in src.keys():
        v, q = src.video(vid), src.question(vid, qid)
        want = fuse(q.uniform, q.scene, q.semantic, q.semantic_raw, v.scene_rep,
                    FusionConfig(preset="videocfr-ref"))
        np.testing.assert_array_equal(new.prior(vid, qid), want)
        assert not np.allclose(new.prior(vid, qid), src.prior(vid, qid))  # cfr != ref
        for name in ("uniform", "scene", "semantic", "semantic_raw"):
            np.testing.assert_array_equal(getattr(new.question(vid, qid), name), getattr(q, name))
        np.testing.assert_array_equal(new.video(vid).embeddings, v.embeddings)


def test_re_fuse_back_to_the_source_preset_gives_the_source_priors(source, tmp_path):
    re_fuse_cache(source, tmp_path / "ref", FusionConfig(preset="videocfr-ref"))
    re_fuse_cache(tmp_path / "ref", tmp_path / "back", FusionConfig(preset="cfr"))
    back, src = PriorTable.load(tmp_path / "back"), PriorTable.load(source)
    assert Cache(tmp_path / "back").config[RE_FUSED_FROM] == Cache(tmp_path / "ref").config_hash
    for key in src.keys():
        np.testing.assert_allclose(back.get(*key), src.get(*key), atol=1e-6)


def test_re_fuse_novelty_uses_the_stored_embeddings(source, tmp_path):
    cfg = FusionConfig(preset="cfr-novelty", temperature=0.2)
    re_fuse_cache(source, tmp_path / "nov", cfg)
    src, new = Cache(source), Cache(tmp_path / "nov")
    for vid, qid in src.keys():
        want = fuse_record(src.video(vid), src.question(vid, qid), cfg)
        np.testing.assert_array_equal(new.prior(vid, qid), want)


def test_cli_weights_and_temperature(source, tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["cache", "re-fuse", str(source), "--preset", "cfr", "--weights", "0,1,1",
                 "--temperature", "0.5", "-o", str(out)]) == 0
    assert "config hash" in capsys.readouterr().out
    fusion = Cache(out).config["fusion"]
    assert (fusion["w_uniform"], fusion["w_scene"], fusion["w_semantic"]) == (0, 1, 1)
    assert fusion["temperature"] == 0.5
    assert main(["cache", "verify", str(out)]) == 0
    # a second re-fuse (by the alias `refuse`) into the same, now full, directory is refused
    assert main(["cache", "refuse", str(source), "--preset", "cfr", "-o", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert verify_cache(out) == []


@pytest.mark.parametrize("weights", ["1,2", "a,b,c", "-1,1,1", "0,0,0"])
def test_bad_weights(weights):
    with pytest.raises(ValueError):
        fusion_from_cli("cfr", weights, None)


def _corrupt(cache: Path, name: str, value_fn) -> None:
    shard = sorted((cache / "shards").glob("*.h5"))[0]
    with h5py.File(shard, "r+") as f:
        ds = f[name]
        ds[...] = value_fn(ds[()])
    resign_values(shard)  # the saliences are bad as written: re-fuse's own checks must see them


@pytest.mark.parametrize("name, fn, reason", [
    ("qframes/scene", lambda a: np.where(np.arange(a.size) == 3, np.nan, a), "NaN"),
    ("qframes/semantic", lambda a: a * 0.5, "semantic"),
    ("qframes/scene", lambda a: a + 2.0, "leaves [0, 1]"),
    ("qframes/uniform", lambda a: np.zeros_like(a), "uniform"),
], ids=["nan", "semantic-vs-raw", "out-of-range", "uniform-missing"])
def test_bad_saliences_name_the_item_and_write_nothing(source, tmp_path, capsys, name, fn,
                                                       reason):
    _corrupt(source, name, fn)
    out = tmp_path / "out"
    with pytest.raises(SchemaError, match="question") as err:
        re_fuse_cache(source, out, FusionConfig(preset="cfr"))
    assert reason in str(err.value) and "vid000" in str(err.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert main(["cache", "re-fuse", str(source), "--preset", "cfr", "-o", str(out)]) == 2
    assert "vid000" in capsys.readouterr().err


def test_missing_salience_dataset(source, tmp_path):
    shard = sorted((source / "shards").glob("*.h5"))[0]
    with h5py.File(shard, "r+") as f:
        del f["qframes/semantic_raw"]
    with pytest.raises(SchemaError, match="semantic_raw"):
        re_fuse_cache(source, tmp_path / "out", FusionConfig(preset="videocfr-ref"))
    assert not (tmp_path / "out").exists()


def test_re_fuse_imports_no_torch(source, tmp_path):
    code = (
        "import sys; from videocfr.cli import main\n"
        f"assert main(['cache', 're-fuse', {str(source)!r}, '--preset', 'cfr-novelty', '-o', "
        f"{str(tmp_path / 'o')!r}]) == 0\n"
        "heavy = {'torch', 'open_clip', 'decord', 'cv2', 'precompute', 'faiss'} & "
        "set(sys.modules)\nassert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
