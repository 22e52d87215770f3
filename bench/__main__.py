"""`python -m bench <scenario> [options]`: run a benchmark scenario (see bench/README.md)."""

from __future__ import annotations

import argparse
import importlib
import sys

from bench import store_bench
from bench.scenarios import add_fixed_load_parser, finish_args
from proxy import _codec

# Scenarios with a module (and options) of their own: `python -m bench <name> [options]`.
MODULES = {
    "outage": "bench.outage",  # forwarding while the capture database is down
    "outbox-storm": "bench.storm",  # an upstream outage under a fleet, then the upstream back at once
    "reconnect-storm": "bench.reconnect",  # 20,000 chargers connecting within 10 s
    "fleet": "bench.fleet",  # 50,000 chargers held connected for 10 minutes
    "max-rate": "bench.max_rate",  # a rising offered rate until one proxy process falls behind
    "quarter-close": "bench.close_bench",  # the quarterly close of 1.4 M sessions, 1 and 2 workers
    "poison-drain": "bench.poison",  # 3,000 events with 1 % the database refuses, this tree vs a baseline
    "faults": "bench.faults",  # upstream outage with attackers, database stall, disk full, password flood
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not _codec.OPTIMIZED and not {"-h", "--help"} & set(argv):
        print(
            "bench: the native codec is a debug build, which would skew every figure; build it with\n"
            "    .venv/bin/maturin develop --release    (scripts/setup does)",
            file=sys.stderr,
        )
        return 2
    if argv and argv[0] in MODULES:
        module = importlib.import_module(MODULES[argv[0]])
        return int(module.main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split(":")[0],
        epilog="more scenarios: " + ", ".join(MODULES) + " (each takes --help)",
    )
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
