"""`python -m bench <scenario> [options]`: run a benchmark scenario (see bench/README.md)."""

from __future__ import annotations

import argparse
import sys

from bench import store_bench
from bench.scenarios import add_fixed_load_parser, finish_args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    add_fixed_load_parser(sub)
    store_bench.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.scenario == "fixed-load":
        finish_args(args, argv)
    else:
        store_bench.finish_args(args)
    return args.func(args, argv)


if __name__ == "__main__":
    sys.exit(main())
