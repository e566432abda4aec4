"""The `videocfr` console script: one command, a subcommand per stage.

This module is the only place that wires stages together; nothing below imports it.

- `videocfr cache ...` is cache_format's own (core install only); its `search` and `plot`
  subcommands need a stage (the cache's CLIP text tower from precompute, the plots of evaluate),
  so they are handed to cache_format from here.
- `videocfr precompute margins ...` is the selector's data-filter job (videocfr.selector.margins).
- `videocfr train --config X` runs the selector trainer when X says `trainer: selector`.

The stages are imported on demand from their packages, so a team that only reads caches needs
none of their dependencies.
"""

from __future__ import annotations

import importlib
import logging
import sys

from videocfr.cache_format.cli import cache_main
from videocfr.cache_format.schema import CacheError

STAGES = {
    "precompute": ("videocfr.precompute.cli", "decode, detect scenes, embed, write a prior cache"),
    "train": ("videocfr.train.cli", "CF-GRPO training with priors looked up from a cache"),
    "evaluate": ("videocfr.evaluate.cli", "QA accuracy, V-NIAH and focus metrics"),
    "select": ("videocfr.selector.select", "frames per question: a strategy or a selector"),
    "world": ("videocfr.train.world_build", "train the world's tiny CLIP and VLM (METHOD §9)"),
}
# the extra that installs a module's dependencies, when it is not the command's own name
EXTRAS = {"videocfr.selector.select": "train", "videocfr.selector.margins": "train",
          "videocfr.selector.cli": "train", "videocfr.train.world_build": "train"}


def cache_embedder(cache, device: str, checkpoint: str | None):
    """The cache's own CLIP text tower (`videocfr cache search`): the precompute stage's."""
    try:
        from videocfr.precompute.cache_model import cache_embedder as load  # noqa: PLC0415
    except ModuleNotFoundError as err:
        raise CacheError(f"`videocfr cache search` embeds the query with the cache's CLIP model "
                         f"and needs the 'precompute' extra ({err}): pip install -e "
                         f"'.[precompute]'") from None
    return load(cache, device=device, checkpoint=checkpoint)


def cache_plot(cache, video_id: str, output: str, question: str | None,
               video_root: str | None):
    """`videocfr cache plot`: evaluate's plot of one video (matplotlib + the frame decoder)."""
    try:
        from videocfr.evaluate.plots import plot_video  # noqa: PLC0415
    except ModuleNotFoundError as err:
        raise CacheError(f"`videocfr cache plot` needs the 'evaluate' extra ({err}): pip "
                         f"install -e '.[evaluate]'") from None
    return plot_video(cache, video_id, output, question, video_root)


def _config_args(argv: list[str]) -> list[str]:
    """The value(s) given to --config (`--config X` or `--config=X`)."""
    return [b for a, b in zip(argv, argv[1:]) if a == "--config"] + [
        a.split("=", 1)[1] for a in argv if a.startswith("--config=")]


def route(command: str, rest: list[str]) -> tuple[str, list[str]]:
    """(module whose `main` runs the command, the arguments it gets)."""
    if command == "precompute" and rest[:1] == ["margins"]:  # ReFoCUS's data filter
        return "videocfr.selector.margins", rest[1:]
    if command == "train" and _config_args(rest):
        try:
            from videocfr.selector.config import is_selector_config  # noqa: PLC0415
        except ModuleNotFoundError:
            pass  # the train stage itself reports the missing extra
        else:
            if any(is_selector_config(a) for a in _config_args(rest)):  # `trainer: selector`
                return "videocfr.selector.cli", rest
    return STAGES[command][0], rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    usage = "usage: videocfr {cache,precompute,train,evaluate,select,world} ...\n\n" + "\n".join(
        [f"  {'cache':11s} inspect, verify, merge, re-fuse, export and search prior caches"]
        + [f"  {name:11s} {desc}" for name, (_, desc) in STAGES.items()])
    if not argv or argv[0] in ("-h", "--help"):
        try:
            print(usage)
        except BrokenPipeError:  # `videocfr --help | head`: the reader left, not an error
            pass
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "cache":
        return cache_main(rest, embedder=cache_embedder, plot=cache_plot)
    if command not in STAGES:
        print(f"error: unknown command {command!r}\n{usage}", file=sys.stderr)
        return 2
    module_name, rest = route(command, rest)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            print(f"error: `videocfr {command}` is not part of this release yet",
                  file=sys.stderr)
            return 2
        if (err.name or "").startswith("videocfr"):
            raise  # a bug in the project itself, not a missing extra
        extra = EXTRAS.get(module_name, command)
        print(f"error: `videocfr {command}` needs the {extra!r} extra ({err}); install it with "
              f"pip install -e '.[{extra}]'", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
