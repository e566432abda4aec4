"""The prior sources' one table (cache_format.fusion.SOURCES) and what reads it.

The last test adds a toy stored source the way a developer would (one SOURCES entry, its weight
field in FusionConfig, its array field in QuestionRecord), in a copy of the cache_format package
run in a child interpreter, and shows it flows through write → read → verify → re-fuse with no
other edit.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from videocfr.cache_format import FusionConfig, QuestionRecord, schema
from videocfr.cache_format.fusion import (
    CLI_WEIGHTS,
    DERIVED,
    FUSION_INPUTS,
    PRESET_WEIGHTS,
    QFRAME_ARRAYS,
    SALIENCES,
    SOURCES,
    WEIGHT_FIELDS,
    fuse,
    fuse_saliences,
)
from videocfr.precompute.saliences import QuestionSaliences

ROOT = Path(__file__).resolve().parents[1]


def test_the_classes_have_a_field_per_source():
    fields = {f.name for f in dataclasses.fields(FusionConfig)}
    assert set(WEIGHT_FIELDS) <= fields, "add w_<name>: float | None = None to FusionConfig"
    assert set(QFRAME_ARRAYS) <= {f.name for f in dataclasses.fields(QuestionRecord)}, \
        "add <name>: np.ndarray to QuestionRecord"
    assert tuple(f.name for f in dataclasses.fields(QuestionSaliences)) == QFRAME_ARRAYS


def test_everything_else_is_derived_from_the_table():
    assert SALIENCES == ("uniform", "scene", "semantic") and DERIVED == ("novelty",)
    assert QFRAME_ARRAYS == (*SALIENCES, "semantic_raw", "prior")
    assert {n for n in schema.SHARD_DATASETS if n.startswith("qframes/")} == \
        {f"qframes/{n}" for n in QFRAME_ARRAYS}
    assert CLI_WEIGHTS == "wu,ws,wr[,wn]"
    assert PRESET_WEIGHTS["cfr-novelty"] == tuple(s.weights["cfr-novelty"] for s in SOURCES)


def test_fuse_saliences_names_a_missing_input():
    k = 4
    inputs = {n: np.ones(k, np.float32) for n in FUSION_INPUTS if n != "semantic"}
    with pytest.raises(ValueError, match="semantic"):
        fuse_saliences(inputs, np.ones(k, bool))
    inputs["semantic"] = np.linspace(0, 1, k).astype(np.float32)
    got = fuse_saliences(inputs, np.ones(k, bool))
    want = fuse(inputs["uniform"], inputs["scene"], inputs["semantic"], inputs["semantic_raw"],
                np.ones(k, bool))
    assert np.array_equal(got, want)


# The developer's edit: (file, anchor, text inserted before the anchor).
TOY_EDIT = [
    ("fusion.py", '    PriorSource("novelty",',
     '    PriorSource("toy", {"cfr": 2.0, "cfr-novelty": 2.0, "videocfr-ref": 0.0}, "t"),\n'),
    ("fusion.py", "    temperature: float = 0.1\n", "    w_toy: float | None = None\n"),
    ("records.py", "    semantic_raw: np.ndarray\n", "    toy: np.ndarray\n"),
]

TOY_SCRIPT = textwrap.dedent("""
    import sys
    import h5py, numpy as np
    from videocfr.cache_format import Cache, FusionConfig, QuestionRecord, ShardWriter, \\
        finalize_cache, verify_cache, verify_shard
    from videocfr.cache_format.fusion import CLI_WEIGHTS, SALIENCES, fuse_saliences
    from videocfr.cache_format.re_fuse import fusion_from_cli, re_fuse_cache
    from videocfr.cache_format.schema import SchemaError
    from synthetic_cache import TEST_CONFIG, TEST_MODEL, make_video, resign_values

    src, out, bad = sys.argv[1:4]
    assert SALIENCES == ("uniform", "scene", "semantic", "toy"), SALIENCES
    assert CLI_WEIGHTS == "wu,ws,wr,wt[,wn]", CLI_WEIGHTS

    def toy_salience(k):  # the toy's salience function: later frames score higher
        return np.linspace(0.0, 1.0, k).astype(np.float32)

    video = make_video("vid000", k=8, dim=16)
    k, rep = video.num_sampled, video.scene_rep
    raw = np.linspace(-0.2, 0.4, k)[::-1].astype(np.float32)
    inputs = {"uniform": np.ones(k, np.float32),
              "scene": np.where(rep, 1.0, 0.5).astype(np.float32),
              "semantic": ((raw - raw.min()) / (raw.max() - raw.min())).astype(np.float32),
              "semantic_raw": raw, "toy": toy_salience(k)}
    cfg = FusionConfig()
    assert cfg.w_toy == 2.0
    q = QuestionRecord(video_id="vid000", question_id="q0", question="?", options=[],
                       answer="A", problem_type="free-form",
                       text_embedding=video.embeddings[0], prior=fuse_saliences(inputs, rep, cfg),
                       **inputs)
    with ShardWriter(src, {**TEST_CONFIG, "fusion": {"preset": "cfr", "w_toy": 2.0}},
                     embed_dim=16, model=TEST_MODEL) as writer:
        writer.add(video, [q])
    finalize_cache(src)
    # read: the toy source is a stored salience of the record
    back = Cache(src).question("vid000", "q0")
    assert np.array_equal(back.toy, inputs["toy"]) and "toy" in back.saliences()
    assert verify_cache(src) == []
    # re-fuse with the toy source weighted from the CLI's --weights
    fusion = fusion_from_cli("cfr", "0.1,1,3,5", None)
    assert fusion.w_toy == 5.0 and fusion.w_novelty == 0.0
    re_fuse_cache(src, out, fusion)
    assert verify_cache(out) == []
    new = Cache(out).question("vid000", "q0")
    assert np.array_equal(new.toy, inputs["toy"])
    assert np.allclose(new.prior, fuse_saliences(inputs, rep, fusion))
    assert not np.allclose(new.prior, fuse_saliences(inputs, rep, FusionConfig(w_toy=0.0)))
    # a stored toy salience out of [0, 1] is named by verify and by re-fuse
    shard = sorted(__import__("pathlib").Path(src, "shards").glob("*.h5"))[0]
    with h5py.File(shard, "r+") as f:
        f["qframes/toy"][...] = f["qframes/toy"][()] + 2.0
    resign_values(shard)  # bad as written: the range checks must see it, not the digest
    problems = verify_shard(shard)
    assert any("qframes/toy leaves [0, 1]" in str(p) for p in problems), problems
    try:
        re_fuse_cache(src, bad, fusion)
    except SchemaError as err:
        assert "salience toy leaves [0, 1]" in str(err), err
    else:
        raise AssertionError("re-fuse accepted a toy salience out of [0, 1]")
    print("toy ok")
""")


def test_a_toy_source_is_one_entry_and_two_fields(tmp_path):
    pkg = tmp_path / "pkg" / "videocfr"
    shutil.copytree(ROOT / "cache_format", pkg / "cache_format",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "videocfr" / "__init__.py", pkg / "__init__.py")
    for name, anchor, text in TOY_EDIT:
        path = pkg / "cache_format" / name
        src = path.read_text()
        assert src.count(anchor) == 1, (name, anchor)
        path.write_text(src.replace(anchor, text + anchor))
    env_path = f"{pkg.parent}:{ROOT / 'tests'}"
    out = subprocess.run(
        [sys.executable, "-c", TOY_SCRIPT, str(tmp_path / "src"), str(tmp_path / "out"),
         str(tmp_path / "bad")], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": env_path}, cwd=tmp_path)  # not the checkout's videocfr
    assert out.returncode == 0, out.stderr[-3000:]
    assert "toy ok" in out.stdout
