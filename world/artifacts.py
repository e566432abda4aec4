"""Where the world's trained models live, and the checks that keep them honest.

`videocfr world build` (or `make world`) writes, under a root (default `caches/world/`, never
committed), one folder per generator version and seed:

    caches/world/v<WORLD_VERSION>-seed<SEED>/
        clip.pt       the world CLIP (open_clip checkpoint, `{"state_dict", "world"}`)
        vlm/          the world VLM (save_pretrained of model + processor, and world.json)
        policy/       the GRPO policy (`videocfr world policy`: the VLM fine-tuned to answer
                      "<word> <letter>"; world.json's "policy" entry has the VLM's sha256)
        build.json    world_version, seed, sha256 of clip.pt, the training figures

Loading never retrains and never falls back to a random model: a missing artifact, one from
another generator version, or a CLIP file whose sha256 differs from build.json's raises
`WorldArtifactError` naming the file and the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .objects import WORLD_VERSION

DEFAULT_ROOT = Path("caches/world")
BUILD_FILE = "build.json"
CLIP_FILE = "clip.pt"
VLM_DIR = "vlm"
VLM_RECORD = "world.json"
POLICY_DIR = "policy"


class WorldArtifactError(ValueError):
    """A world artifact is missing, stale (another generator version) or altered."""


def rebuild_command(seed: int = 0, root: str | os.PathLike = DEFAULT_ROOT) -> str:
    """The command that (re)builds the artifacts of a seed under a root."""
    if Path(root) == DEFAULT_ROOT and seed == 0:
        return "make world (or: videocfr world build)"
    return f"videocfr world build --seed {seed} --root {root}"


def artifact_dir(root: str | os.PathLike = DEFAULT_ROOT, seed: int = 0,
                 version: int = WORLD_VERSION) -> Path:
    """root / v<version>-seed<seed>: the folder a build of that version and seed writes."""
    return Path(root) / f"v{version}-seed{int(seed)}"


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path, what: str, fix: str) -> dict:
    if not path.is_file():
        raise WorldArtifactError(f"{what} {path} is missing; build it with: {fix}")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WorldArtifactError(f"{path} is not valid JSON ({err}); rebuild with: {fix} "
                                 f"--force") from err
    if not isinstance(doc, dict):
        raise WorldArtifactError(f"{path} is not a JSON object; rebuild with: {fix} --force")
    return doc


def _check_version(doc: dict, path: Path, fix: str) -> None:
    found = doc.get("world_version")
    if found != WORLD_VERSION:
        raise WorldArtifactError(
            f"{path} was built by world generator version {found!r}, this code generates "
            f"version {WORLD_VERSION}: its models never saw what the generator now draws. "
            f"Rebuild with: {fix}")


def read_build(root: str | os.PathLike = DEFAULT_ROOT, seed: int = 0) -> dict:
    """The build record of a seed (WorldArtifactError when missing or stale)."""
    folder = artifact_dir(root, seed)
    fix = rebuild_command(seed, root)
    doc = _read_json(folder / BUILD_FILE, "world build record", fix)
    _check_version(doc, folder / BUILD_FILE, fix)
    if doc.get("seed") != seed:
        raise WorldArtifactError(f"{folder / BUILD_FILE} records seed {doc.get('seed')!r}, "
                                 f"not {seed}; rebuild with: {fix} --force")
    return doc


def check_clip_file(path: str | os.PathLike, expected_sha256: str | None = None) -> str:
    """Check a world CLIP checkpoint file before it is loaded; returns its sha256.

    The file must exist, carry this generator version in its "world" entry, and match the
    sha256 recorded beside it (build.json in its folder) and `expected_sha256` when given
    (e.g. the one a cache manifest records as "file:<sha256>").

    Raises:
        WorldArtifactError: naming the file and the command that rebuilds it.
    """
    import torch

    path = Path(path)
    folder = path.parent
    seed = _seed_of(folder)
    fix = rebuild_command(seed if seed is not None else 0,
                          folder.parent if seed is not None else DEFAULT_ROOT)
    if not path.is_file():
        raise WorldArtifactError(f"world CLIP checkpoint {path} is missing; build it with: {fix}")
    digest = sha256_of(path)
    record = folder / BUILD_FILE
    if record.is_file():
        recorded = _read_json(record, "world build record", fix).get("clip_sha256")
        if recorded != digest:
            raise WorldArtifactError(f"{path} has sha256 {digest[:12]}… but {record} records "
                                     f"{str(recorded)[:12]}…: the file was altered or replaced. "
                                     f"Rebuild with: {fix} --force")
    if expected_sha256 is not None and expected_sha256 != digest:
        raise WorldArtifactError(f"{path} has sha256 {digest[:12]}… but {expected_sha256[:12]}… "
                                 f"is recorded for it (the cache was made with another world "
                                 f"CLIP); use that file, or re-run precompute with this one")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same here
        raise WorldArtifactError(f"{path} is not a torch checkpoint ({err}); rebuild with: "
                                 f"{fix} --force") from err
    world = doc.get("world") if isinstance(doc, dict) else None
    if not isinstance(world, dict):
        raise WorldArtifactError(f"{path} has no 'world' entry: not a world CLIP checkpoint "
                                 f"written by `videocfr world build`; build one with: {fix}")
    _check_version(world, path, fix)
    return digest


def check_vlm_dir(path: str | os.PathLike) -> dict:
    """Check a world VLM checkpoint folder; returns its world.json record.

    Raises:
        WorldArtifactError: no world.json (not a world VLM), or another generator version.
    """
    path = Path(path)
    seed = _seed_of(path.parent)
    fix = rebuild_command(seed if seed is not None else 0,
                          path.parent.parent if seed is not None else DEFAULT_ROOT)
    if not (path / "config.json").is_file():
        raise WorldArtifactError(f"world VLM checkpoint {path} is missing (no config.json); "
                                 f"build it with: {fix}")
    doc = _read_json(path / VLM_RECORD, "world VLM record", fix)
    _check_version(doc, path / VLM_RECORD, fix)
    return doc


def clip_checkpoint(root: str | os.PathLike = DEFAULT_ROOT, seed: int = 0) -> Path:
    """The checked world CLIP file of a seed (WorldArtifactError when missing/stale/altered)."""
    build = read_build(root, seed)
    path = artifact_dir(root, seed) / CLIP_FILE
    check_clip_file(path, build.get("clip_sha256"))
    return path


def vlm_checkpoint(root: str | os.PathLike = DEFAULT_ROOT, seed: int = 0) -> Path:
    """The checked world VLM folder of a seed (WorldArtifactError when missing or stale)."""
    read_build(root, seed)
    path = artifact_dir(root, seed) / VLM_DIR
    check_vlm_dir(path)
    return path


def is_world_vlm(path: str | os.PathLike) -> bool:
    """True when a checkpoint folder is a world VLM (it has world.json)."""
    return (Path(path) / VLM_RECORD).is_file()


def _seed_of(folder: Path) -> int | None:
    """The seed of an artifact folder named v<version>-seed<seed>, or None."""
    name = folder.name
    if name.startswith("v") and "-seed" in name:
        tail = name.split("-seed", 1)[1]
        if tail.isdigit():
            return int(tail)
    return None
