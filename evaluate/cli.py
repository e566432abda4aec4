"""`videocfr evaluate ...`: one subcommand per evaluation, each served by its own module.

Each module named below has `main(argv: list[str]) -> int`; it is imported only when its
subcommand runs, so `videocfr evaluate --help` needs no model libraries.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "qa": ("videocfr.evaluate.qa", "QA accuracy under frame-selection strategies and budgets"),
    "vniah": ("videocfr.evaluate.vniah", "needle in a video haystack: build, run, heatmaps"),
    "lmms-check": ("videocfr.evaluate.lmms", "can the installed lmms-eval run videocfr_qwen2_5_vl"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: videocfr evaluate {" + ",".join(SUBCOMMANDS) + "} ...\n\n" + "\n".join(
        f"  {name:10s} {desc}" for name, (_, desc) in SUBCOMMANDS.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"error: unknown evaluation {argv[0]!r}\n{usage}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)
