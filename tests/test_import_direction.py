"""Imports run one way: {cache_format, world} < vlm < {precompute, train, evaluate} < selector
< cli.

Every module of the source tree is parsed (ast, nothing is imported) and each import of a
`videocfr.*` module, absolute or relative, at module level or inside a function, and each
`importlib.import_module("videocfr....")` with a literal name, is an edge. An edge fails when it
points to a higher layer, to a sibling of the same layer, or to the umbrella `videocfr.cli`
from anywhere but the `videocfr` package itself.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package -> layer; packages of one layer are siblings and never import each other
LAYERS = {"cache_format": 0, "world": 0, "vlm": 1, "precompute": 2, "train": 2, "evaluate": 2,
          "selector": 3, "videocfr": 4}


def module_name(path: Path) -> list[str]:
    """`evaluate/vniah/run.py` -> ["videocfr", "evaluate", "vniah", "run"] (the installed name)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return parts if parts[0] == "videocfr" else ["videocfr", *parts]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file that names a videocfr module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                targets = [".".join(base + ([node.module] if node.module else []))]
            else:
                targets = [node.module or ""]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        out += [(node.lineno, t) for t in targets if t == "videocfr" or t.startswith("videocfr.")]
    return sorted(out)


def package_of(module: str) -> str:
    """The layer package a module belongs to: videocfr.train.data -> "train"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "videocfr"


def violation(source: str, target_module: str) -> str | None:
    """Why an edge from package `source` to `target_module` runs against the direction."""
    target = package_of(target_module)
    if target_module == "videocfr.cli" or target_module.startswith("videocfr.cli."):
        return None if source == "videocfr" else "imports the umbrella command videocfr.cli"
    if target == source:
        return None
    if LAYERS[target] > LAYERS[source]:
        return (f"{source} (layer {LAYERS[source]}) imports {target} (layer {LAYERS[target]}), "
                f"a layer above it")
    if LAYERS[target] == LAYERS[source]:
        return f"siblings: {source} imports {target}"
    return None


def source_files() -> list[Path]:
    return sorted(p for pkg in LAYERS for p in (REPO / pkg).rglob("*.py"))


def test_every_package_is_in_a_layer():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    dirs = {line.split("=")[1].strip()
            for line in setup["options"]["package_dir"].strip().splitlines()}
    assert dirs <= set(LAYERS), f"package folders without a layer: {sorted(dirs - set(LAYERS))}"


def test_imports_run_one_way():
    edges = []
    for path in source_files():
        source = package_of(".".join(module_name(path)))
        for line, target in imported_modules(path):
            why = violation(source, target)
            if why:
                edges.append(f"{path.relative_to(REPO)}:{line}: imports {target}: {why}")
    assert not edges, ("imports against the direction cache_format < vlm < {precompute, train, "
                       "evaluate} < selector < videocfr.cli (move the shared code down, or wire "
                       "the call in videocfr/cli.py):\n" + "\n".join(edges))


@pytest.mark.parametrize("source,target,bad", [
    ("train", "videocfr.evaluate.qa", True),       # siblings
    ("precompute", "videocfr.selector.margins", True),  # up
    ("cache_format", "videocfr.precompute.cache_model", True),
    ("vlm", "videocfr.train.data", True),
    ("selector", "videocfr.cli", True),
    ("train", "videocfr.vlm.answers", False),
    ("selector", "videocfr.evaluate.strategies", False),
    ("videocfr", "videocfr.selector.cli", False),
    ("videocfr", "videocfr.cli", False),
])
def test_the_rule_names_what_runs_the_wrong_way(source, target, bad):
    assert (violation(source, target) is not None) == bad


def test_relative_and_lazy_imports_are_seen(tmp_path, monkeypatch):
    (tmp_path / "train").mkdir()
    path = tmp_path / "train" / "m.py"
    path.write_text("from ..evaluate import qa\n"
                    "def f():\n    import videocfr.selector.cli\n"
                    "importlib.import_module('videocfr.precompute.cli')\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert [t for _, t in imported_modules(path)] == [
        "videocfr.evaluate", "videocfr.selector.cli", "videocfr.precompute.cli"]
