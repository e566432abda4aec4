"""`videocfr train`: run CF-GRPO from a YAML config.

    videocfr train --config configs/train/tiny.yaml [--resume] [--output-dir DIR] [k=v ...]
    python -m videocfr.train.cli --config configs/train/tiny.yaml
    deepspeed --hostfile hosts --module videocfr.train.cli --config configs/train/qwen2_5_vl_7b.yaml

Overrides are `section.key=value` (YAML values): `grpo.beta=0 run.max_steps=10`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videocfr train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train/tiny.yaml",
                        help="train YAML (default: configs/train/tiny.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in the run directory")
    parser.add_argument("--output-dir", default=None, help="run directory (run.output_dir)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. grpo.beta=0 run.max_steps=10")
    return parser


def _selector_config(path: str) -> bool:
    """True for a `trainer: selector` YAML (the umbrella `videocfr train` routes those)."""
    import yaml  # noqa: PLC0415

    try:
        data = yaml.safe_load(open(path).read())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("trainer") == "selector"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status.

    Args:
        argv: arguments after `train` (default: sys.argv[1:]).

    Returns:
        0 on success, 2 on a configuration or input error (the message says how to fix it).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if _selector_config(args.config):
        print(f"videocfr train: {args.config} is a ReFoCUS selector config (trainer: selector); "
              f"run it with `videocfr train --config {args.config}`", file=sys.stderr)
        return 2
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                                                   "%(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        if args.output_dir is not None:
            cfg.run.output_dir = args.output_dir
    except (ValueError, FileNotFoundError) as err:
        print(f"videocfr train: {err}", file=sys.stderr)
        return 2
    from videocfr.cache_format import CacheError  # noqa: PLC0415

    from .trainer import train  # noqa: PLC0415  (torch/transformers only when training)

    try:
        run_dir = train(cfg, resume=args.resume)
    except (FileNotFoundError, FileExistsError, CacheError) as err:
        print(f"videocfr train: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
