"""The `videocfr` console script: one command, a subcommand per stage.

`videocfr cache ...` is cache_format's own (core install only). The stages are imported on demand
from their packages, so a team that only reads caches needs none of their dependencies.
"""

from __future__ import annotations

import importlib
import logging
import sys

from videocfr.cache_format.cli import cache_main

STAGES = {
    "precompute": ("videocfr.precompute.cli", "decode, detect scenes, embed, write a prior cache"),
    "train": ("videocfr.train.cli", "CF-GRPO training with priors looked up from a cache"),
    "evaluate": ("videocfr.evaluate.cli", "QA accuracy, V-NIAH and focus metrics"),
    "select": ("videocfr.train.selector.select", "frames per question from a trained selector"),
    "world": ("videocfr.train.world_build", "train the world's tiny CLIP and VLM (METHOD §9)"),
}


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
        return cache_main(rest)
    if command not in STAGES:
        print(f"error: unknown command {command!r}\n{usage}", file=sys.stderr)
        return 2
    module_name = STAGES[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            print(f"error: `videocfr {command}` is not part of this release yet",
                  file=sys.stderr)
            return 2
        if (err.name or "").startswith("videocfr"):
            raise  # a bug in the project itself, not a missing extra
        extra = {"select": "train", "world": "train"}.get(command, command)
        print(f"error: `videocfr {command}` needs the {extra!r} extra ({err}); install it with "
              f"pip install -e '.[{extra}]'", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
