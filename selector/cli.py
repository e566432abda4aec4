"""`videocfr train --config configs/train/refocus_*.yaml`: the ReFoCUS selector trainer.

    videocfr train --config configs/train/refocus_tiny.yaml [--resume] [--output-dir DIR] [k=v]

The umbrella `videocfr train` hands a config with `trainer: selector` to `main` here. Overrides are
`section.key=value` (YAML values): `grpo.batch_size=4 run.max_steps=10`.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videocfr train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="selector YAML (trainer: selector)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in the run directory")
    parser.add_argument("--output-dir", default=None, help="run directory (run.output_dir)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 on success, 2 on a configuration or input error."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from videocfr.cache_format import CacheError  # noqa: PLC0415

    from .config import load_selector_config  # noqa: PLC0415

    try:
        cfg = load_selector_config(args.config, args.overrides)
        if args.output_dir is not None:
            cfg.run.output_dir = args.output_dir
        from .trainer import train  # noqa: PLC0415

        run_dir = train(cfg, resume=args.resume)
    except (ValueError, FileNotFoundError, FileExistsError, CacheError) as err:
        print(f"videocfr train: {err}", file=sys.stderr)
        return 2
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
