"""`python -m bench poison-drain`: draining 3,000 session events of which 1 % are poison.

Side by side in one run, this tree and a baseline (`--baseline REV`, default the commit before
capture bisected refused batches: the tree is exported with `git archive` into a scratch
directory and the native codec copied in), each measured in a process of its own that imports
that tree's `proxy` package. For each tree, path and poison, a fresh database on one embedded
PostgreSQL server (fsync on, as in production) and the journal storing through its store
process, as a proxy worker does:

- paths: `direct`, the events submitted to a running journal in frames of 10 (as links do);
  `replay`, the events waiting in the spill log at start (a restart after an outage);
- poison, every 100th event: `refused`, its charger's events are refused by the database (a
  trigger); `nul`, a NUL in one of its strings (which PostgreSQL text and jsonb cannot hold);
  `none`, no poison (the reference).

Reported per run: seconds from the start until every event is stored, kept as a dead letter or
counted lost (and nothing waits on disk), and where the events went. Rounds alternate the order
of the trees; the medians are compared.

    python -m bench poison-drain [--events 3000] [--rounds 2] [--baseline 73f72a0] [--no-results]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this file also runs as a script in another tree (`child`): imports wait
    from bench.harness.report import Report

REPO = Path(__file__).resolve().parents[2]
BASELINE = "73f72a0"  # capture before it bisected refused batches and kept them as dead letters
PATHS = ("direct", "replay")
POISONS = ("none", "refused", "nul")

REFUSE = [
    """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.identity LIKE 'POISON-%' THEN
        RAISE EXCEPTION 'refused by policy: %', NEW.identity;
    END IF;
    RETURN NEW;
END
$$""",
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON charger_events FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
]


# ---------------------------------------------------------------- one measurement (child process)


def poisoned_events(count: int, poison: str) -> list[Any]:
    """`count` realistic events (tracker output of simulated 1.6 chargers), every 100th poisoned."""
    import msgspec

    fleet_events = _this_trees("bench/load/tracker_events.py").fleet_events
    from proxy.capture.events import Sample
    from proxy.capture.tracker import event_id

    events: list[Any] = []
    for frame in fleet_events("CP-BENCH-", 100, 10**6, session_minutes=30, samples=(1, 3)):
        events += frame
        if len(events) >= count:
            break
    events = events[:count]
    for n in range(37, count, 100) if poison != "none" else ():
        event = events[n]
        if poison == "refused":
            event = msgspec.structs.replace(event, identity=f"POISON-{n}")
        else:
            samples = getattr(event, "samples", None)
            if samples:
                first: Sample = msgspec.structs.replace(samples[0], context="Sample.Periodic\x00")
                event = msgspec.structs.replace(event, samples=(first, *samples[1:]))
            else:
                event = msgspec.structs.replace(event, identity=event.identity + "\x00")
        events[n] = msgspec.structs.replace(event, event_id=event_id(event))
    return events


async def measure(dsn: str, path: str, poison: str, count: int, scratch: Path) -> dict[str, Any]:
    import msgspec
    import trio

    from proxy.capture.journal import Journal
    from proxy.capture.spill import SpillLog
    from proxy.capture.store_process import StoreProcess
    from proxy.runtime.config import DatabaseSettings
    from proxy.store.db import open_database

    events = poisoned_events(count, poison)
    settings = DatabaseSettings(dsn=dsn, pool_size=2, connect_timeout=30.0)
    async with open_database(settings) as db:
        if poison == "refused":
            for statement in REFUSE:
                await db.execute(statement)
        spill = SpillLog(scratch / "spill")
        if path == "replay":
            spill.append([msgspec.msgpack.encode(event) for event in events])
            spill.flush()
        journal = Journal(spill)
        stats = journal.stats
        async with StoreProcess(settings, dsn) as store, trio.open_nursery() as nursery:
            started = time.monotonic()
            await nursery.start(journal.run, store)
            if path == "direct":
                for n in range(0, count, 10):
                    journal.submit(events[n : n + 10])
                    await trio.lowlevel.checkpoint()
            while (
                journal.spilling
                or stats.stored + stats.replayed + getattr(stats, "dead_letters", 0) + stats.lost
                < count
            ):
                await trio.sleep(0.005)
            seconds = time.monotonic() - started
            nursery.cancel_scope.cancel()
        spill.close()
        kept = await db.fetchval("SELECT to_regclass('capture_dead_letters') IS NOT NULL")
        return {
            "seconds": seconds,
            "rows": await db.fetchval("SELECT count(*) FROM charger_events"),
            "dead_letter_rows": await db.fetchval("SELECT count(*) FROM capture_dead_letters")
            if kept
            else 0,
            "stored": stats.stored,
            "replayed": stats.replayed,
            "dead_letters": getattr(stats, "dead_letters", 0),
            "lost": stats.lost,
            "spilled": stats.spilled,
            "database_errors": stats.database_errors,
        }


def child(argv: list[str]) -> int:
    """One measurement, in a process of its own that imports `--tree`'s packages; JSON on stdout."""
    parser = argparse.ArgumentParser(prog="poison_drain.py")
    parser.add_argument("--tree", type=Path, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--path", choices=PATHS, required=True)
    parser.add_argument("--poison", choices=POISONS, required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.tree))  # that tree's proxy package
    _alias_flat_layout()
    import logging

    import trio

    logging.disable(logging.ERROR)  # the baseline logs every refused event
    with tempfile.TemporaryDirectory(prefix="ere-poison-") as scratch:
        result = trio.run(measure, args.dsn, args.path, args.poison, args.events, Path(scratch))
    print(json.dumps(result))
    return 0


# Trees before the package layout (4b084b4) kept these modules flat in proxy/.
_FLAT_LAYOUT = {
    "proxy.capture.events": "proxy.events",
    "proxy.capture.tracker": "proxy.tracker",
    "proxy.capture.journal": "proxy.journal",
    "proxy.capture.spill": "proxy.spill",
    "proxy.capture.store_process": "proxy.store_process",
    "proxy.runtime.config": "proxy.config",
    "proxy.wire.codec": "proxy.codec",
}


def _alias_flat_layout() -> None:
    """In a tree of the flat layout, the names this file imports point at its flat modules, so
    that any revision can be the baseline."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("proxy.capture") is not None:
        return
    for name, flat in _FLAT_LAYOUT.items():
        sys.modules[name] = importlib.import_module(flat)


def _this_trees(path: str) -> Any:
    """A module of this file's tree by its path (the measured tree's bench may differ)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the scenario (parent process)


def export_tree(rev: str, into: Path) -> Path:
    """`rev` of this repository as files under `into`, with this tree's native codec."""
    archive = subprocess.run(
        ["git", "archive", rev], cwd=REPO, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for codec in (REPO / "proxy").glob("_codec*.so"):
        shutil.copy(codec, into / "proxy" / codec.name)
    return into


def run_one(tree: Path, dsn: str, path: str, poison: str, events: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--tree",
            str(tree),
            "--dsn",
            dsn,
            "--path",
            path,
            "--poison",
            poison,
            "--events",
            str(events),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measurement in {tree} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def create_database(dsn: str, name: str) -> None:
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())


def run(args: argparse.Namespace) -> Report:
    from bench.harness.report import Report, command, loadavg, machine_line
    from testkit.postgres import ServerThread, make_data_dir, remove_data_dir

    load = loadavg()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="ere-poison-base-") as base:
        trees = {"baseline": export_tree(args.baseline, Path(base)), "this tree": REPO}
        data_dir = make_data_dir("ere-poison-pg-")
        thread = ServerThread(data_dir).open()
        server = thread.server
        try:
            number = 0
            for round_no in range(args.rounds):
                order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
                for path in PATHS:
                    for poison in POISONS:
                        for label in order:
                            number += 1
                            name = f"poison_{number}"
                            create_database(server.dsn(), name)
                            result = run_one(
                                trees[label], server.dsn(name), path, poison, args.events
                            )
                            results.setdefault((label, path, poison), []).append(result)
                            print(
                                f"[poison-drain] round {round_no + 1} {label:9} {path:6} {poison:7} "
                                f"{result['seconds']:6.2f} s",
                                file=sys.stderr,
                                flush=True,
                            )
        finally:
            thread.close()
            remove_data_dir(data_dir)
    lines = [
        f"## poison-drain, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        machine_line(load),
        f"- trees: this tree ({commit}) and the baseline {args.baseline} (capture before bisection and dead letters)",
        f"- command (from the repository root): `{command(args)}`",
        (
            f"- {args.events} events of simulated OCPP 1.6 chargers, every 100th poisoned (none: the reference); "
            "journal + store process (nice 10) into an embedded PostgreSQL, fsync on; medians over rounds"
        ),
        "",
        "| path | poison | tree | seconds | stored | replayed | dead letters | lost | spilled | db errors |",
        "|:--|:--|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    ratios = []
    for path in PATHS:
        for poison in POISONS:
            medians = {}
            for label in trees:
                runs = results[label, path, poison]
                seconds = statistics.median(r["seconds"] for r in runs)
                medians[label] = seconds
                last = runs[-1]
                lines.append(
                    f"| {path} | {poison} | {label} | {seconds:.2f} | {last['stored']} | {last['replayed']} | "
                    f"{last['dead_letters']} | {last['lost']} | {last['spilled']} | "
                    f"{last['database_errors']} |"
                )
            ratios.append(
                f"- {path}, {poison}: {medians['baseline']:.2f} s → {medians['this tree']:.2f} s "
                f"({medians['baseline'] / medians['this tree']:.1f}× faster)"
            )
    return Report("\n".join(lines + ["", "Drain time, baseline → this tree:", *ratios]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")


if __name__ == "__main__":  # a measurement process started by `run_one`
    sys.exit(child(sys.argv[1:]))
