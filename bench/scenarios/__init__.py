"""The scenarios, by name: `python -m bench <name>` runs `bench.scenarios.<name with _ for ->`.

Each scenario module has `add_arguments(parser)` for its options and `run(args)`, which measures
and returns a `bench.harness.report.Report`. Scenarios share pieces through bench/harness/ and
bench/load/, never through one another.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name → what it measures, in the order `python -m bench` lists them
SCENARIOS = {
    "fixed-load": "the same offered load through every target, side by side",
    "max-rate": "a rising offered rate until one proxy process falls behind",
    "fleet": "50,000 chargers held connected for 10 minutes",
    "reconnect-storm": "20,000 chargers connecting within 10 s",
    "outage": "forwarding while the capture database is down",
    "outbox-storm": "an upstream outage under a fleet, then the upstream back at once",
    "faults": "upstream outage with attackers, database stall, disk full, password flood",
    "ingest": "sustained session-event ingest rate into PostgreSQL",
    "storage": "bytes per charger-day at one sample a minute",
    "poison-drain": "3,000 events with 1 % the database refuses, this tree vs a baseline",
    "quarter-close": "the quarterly close of 1.4 M sessions, 1 and 2 workers",
    "api": "the partner API's session list over 1 M sessions, 200 clients at 500 requests/s",
    "mirrors": "the primary's latency with a mirror back-office up, down and slow",
    "idle-memory": "memory per idle charger, and where this proxy's Python heap goes",
    "takeover-check": "a worker's look for chargers taken over elsewhere, full and since the last",
}


def scenario(name: str) -> ModuleType:
    """The module of scenario `name`."""
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
