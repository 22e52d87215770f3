"""`python -m bench <scenario> [options]`: run a benchmark scenario (see bench/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.harness.report import RESULTS, UsageError, publish
from bench.scenarios import SCENARIOS, scenario
from proxy import _codec


def usage() -> str:
    width = max(map(len, SCENARIOS))
    lines = [f"  {name:<{width}}  {what}" for name, what in SCENARIOS.items()]
    return (
        "usage: python -m bench <scenario> [options]    (each scenario takes --help)\n\n"
        "scenarios:\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, options = argv[0], argv[1:]
    if name not in SCENARIOS:
        print(f"python -m bench: no scenario {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = scenario(name)
    parser = argparse.ArgumentParser(prog=f"python -m bench {name}", description=SCENARIOS[name])
    module.add_arguments(parser)
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="markdown file the report is appended to"
    )
    parser.add_argument("--no-results", action="store_true", help="only print the report")
    args = parser.parse_args(options)
    if not _codec.OPTIMIZED:
        print(
            "bench: the native codec is a debug build, which would skew every figure; build it with\n"
            "    .venv/bin/maturin develop --release    (scripts/setup does)",
            file=sys.stderr,
        )
        return 2
    args.scenario, args.argv = name, options
    try:
        report = module.run(args)
    except UsageError as error:
        parser.error(str(error))
    publish(report, args)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
