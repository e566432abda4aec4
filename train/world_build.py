"""`videocfr world build`: train the world's tiny CLIP and tiny VLM once per version and seed.

    videocfr world build  [--seed 0] [--root caches/world] [--force]
    videocfr world show   [--seed 0] [--root caches/world]
    videocfr world policy [--seed 0] [--root caches/world] [--force]   (train.world_policy)

The artifacts go to `world.artifacts.artifact_dir(root, seed)`; build.json, written last, marks
a build complete. An up-to-date build is checked (version, sha256) and kept: nothing retrains
unless the generator's WORLD_VERSION or the seed changes, or --force is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from videocfr.world import artifacts
from videocfr.world.objects import COLOURS, SHAPES, WORLD_VERSION

log = logging.getLogger(__name__)


def build(root: str | os.PathLike = artifacts.DEFAULT_ROOT, seed: int = 0, *,
          force: bool = False, clip_config=None, vlm_config=None) -> dict:
    """Train both world models into artifact_dir(root, seed) unless an intact build is there.

    Args:
        root: the artifacts root.
        seed: data, init and held-out streams of both models.
        force: retrain even when an intact build exists.
        clip_config, vlm_config: training settings (defaults: the full `make world` sizes).

    Returns:
        the build record (build.json).

    Raises:
        WorldArtifactError: an existing build that is altered (rebuild with force=True).
    """
    from videocfr.train.world_clip import ClipTrainConfig, train_clip
    from videocfr.train.world_vlm import VlmTrainConfig, train_vlm

    folder = artifacts.artifact_dir(root, seed)
    record_path = folder / artifacts.BUILD_FILE
    if record_path.is_file() and not force:
        record = artifacts.read_build(root, seed)
        artifacts.clip_checkpoint(root, seed)
        artifacts.vlm_checkpoint(root, seed)
        log.info("world build %s is up to date (version %d, seed %d); --force retrains",
                 folder, WORLD_VERSION, seed)
        return record
    if record_path.exists():
        record_path.unlink()  # the marker goes first: a half-rebuilt folder is never "complete"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    clip_config = clip_config or ClipTrainConfig(seed=seed)
    vlm_config = vlm_config or VlmTrainConfig(seed=seed)
    # the two models share nothing: the CLIP trains in a child process beside the VLM (one core
    # each); once it is done, the VLM's next stages take its core too
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        clip_job = pool.submit(train_clip, clip_config, folder / artifacts.CLIP_FILE)
        vlm_figures = train_vlm(vlm_config, folder / artifacts.VLM_DIR, spare_core=clip_job.done)
        clip_figures = clip_job.result()
    record = {
        "world_version": WORLD_VERSION, "seed": seed,
        "clip_sha256": artifacts.sha256_of(folder / artifacts.CLIP_FILE),
        "clip": clip_figures, "vlm": vlm_figures,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    tmp = record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(record_path)
    log.info("world build written to %s in %.0f s", folder, record["wall_s"])
    return record


def build_policy(root: str | os.PathLike = artifacts.DEFAULT_ROOT, seed: int = 0, *,
                 force: bool = False, config=None) -> dict:
    """Fine-tune the built VLM of a seed into its GRPO policy (`train.world_policy`), unless a
    policy made from this very VLM (its weights' sha256) is there.

    Returns:
        the policy's figures (world.json's "policy" entry).
    """
    from videocfr.train.world_policy import PolicyConfig, train_policy

    vlm = artifacts.vlm_checkpoint(root, seed)
    out = artifacts.artifact_dir(root, seed) / artifacts.POLICY_DIR
    vlm_sha = artifacts.sha256_of(vlm / "model.safetensors")
    record = out / artifacts.VLM_RECORD
    if record.is_file() and not force:
        figures = json.loads(record.read_text()).get("policy", {})
        if figures.get("vlm_sha256") == vlm_sha:
            log.info("world policy %s is up to date; --force retrains", out)
            return figures
    if record.exists():
        record.unlink()  # written last by train_policy: a half-written policy is never "done"
    return train_policy(vlm, out, config or PolicyConfig(seed=seed), vlm_sha256=vlm_sha)


def policy_summary(figures: dict) -> str:
    """One line of the policy's held-out figures before and after its fine-tune."""
    parts = [f"world policy: {figures['steps']} steps in {figures['wall_s']:.0f} s"]
    for cell, ev in figures["eval"].items():
        was = figures["before"][cell]
        parts.append(f"{cell} word={ev['word']:.3f} letter={ev['letter']:.3f} "
                     f"agree={ev['agree']:.3f} (before: {was['word']:.3f} / "
                     f"{was['letter']:.3f}; chance 0.25)")
    return "; ".join(parts)


def summary(record: dict) -> str:
    """One line of the build's held-out figures."""
    clip, vlm = record["clip"], record["vlm"]
    parts = [f"world v{record['world_version']} seed={record['seed']}",
             f"clip zero_shot={clip['zero_shot']:.3f} (with distractors "
             f"{clip['zero_shot_distractors']:.3f}, chance {clip['chance']:.3f})"]
    if "tokens" in vlm:
        t = vlm["tokens"]
        parts.append(f"vlm tower per token colour={t['colour']:.3f} shape={t['shape']:.3f} "
                     f"(chance {1 / len(COLOURS):.3f} / {1 / len(SHAPES):.2f})")
    for n, ev in vlm["eval"].items():
        parts.append(f"vlm n={n} needle={ev['needle']['accuracy']:.3f} "
                     f"no_needle={ev['no_needle']['accuracy']:.3f} (chance {vlm['chance']:.2f})")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="videocfr world",
                                description="train / show the world's tiny CLIP and VLM")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("build", "train both models (kept when up to date)"),
                       ("show", "check the artifacts and print their figures"),
                       ("policy", "fine-tune the built VLM into the GRPO policy (kept when up "
                                  "to date)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--root", type=Path, default=artifacts.DEFAULT_ROOT)
        if name != "show":
            s.add_argument("--force", action="store_true", help="retrain an intact one")
    args = p.parse_args(argv)
    try:
        if args.command == "policy":
            figures = build_policy(args.root, args.seed, force=args.force)
            print(policy_summary(figures))
            print(f"policy: {artifacts.artifact_dir(args.root, args.seed) / artifacts.POLICY_DIR}")
            return 0
        if args.command == "build":
            record = build(args.root, args.seed, force=args.force)
        else:
            record = artifacts.read_build(args.root, args.seed)
            artifacts.clip_checkpoint(args.root, args.seed)
            artifacts.vlm_checkpoint(args.root, args.seed)
    except artifacts.WorldArtifactError as err:
        print(f"error: {err}")
        return 2
    print(summary(record))
    folder = artifacts.artifact_dir(args.root, args.seed)
    print(f"clip: {folder / artifacts.CLIP_FILE}\nvlm:  {folder / artifacts.VLM_DIR}")
    return 0
