"""The installed distribution owns one top-level name, `videocfr` (issue: install namespace)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("cache_format", "vlm", "world", "precompute", "train", "evaluate", "selector")


def test_no_code_imports_a_stage_by_its_bare_name():
    bare = re.compile(rf"^\s*(from|import) ({'|'.join(STAGES)})\b", re.M)
    offenders = []
    for folder in (*STAGES, "videocfr", "tests", "benchmarks"):
        for p in (REPO / folder).rglob("*.py"):
            offenders += [f"{p.relative_to(REPO)}: {m.group(0).strip()}"
                          for m in bare.finditer(p.read_text())]
    assert not offenders, "import these as videocfr.<stage>:\n" + "\n".join(offenders)


@pytest.mark.slow
def test_wheel_installs_only_the_videocfr_namespace(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("videocfr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"videocfr", wheel.name.split("-py")[0]
                                                 + ".dist-info"}
    for stage in STAGES:  # every package of the source tree is in the wheel, under videocfr/
        for init in (REPO / stage).rglob("__init__.py"):
            assert f"videocfr/{init.relative_to(REPO).as_posix()}" in names
    for config in (REPO / "world" / "model_configs").glob("*.json"):  # data the code loads
        assert f"videocfr/world/model_configs/{config.name}" in names
    entry = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "videocfr = videocfr.cli:main" in entry
