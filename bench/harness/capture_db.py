"""The fresh capture database the storage scenarios measure (`ingest`, `storage`): an embedded
PostgreSQL in a scratch directory with the server's default settings (fsync and
synchronous_commit on, as in production), opened with `proxy.store.db.open_database`; what the
report says about it, and how far its measurands sequence has gone.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from bench.harness.report import command, machine_line
from proxy.runtime.config import DatabaseSettings

SEQUENCE = "SELECT last_value FROM measurands_code_seq"  # measurands.code: smallint identity


def settings(data_dir: Path) -> DatabaseSettings:
    return DatabaseSettings(data_dir=str(data_dir), pool_size=4, connect_timeout=60.0)


async def sequence_note(db, samples_rows: int) -> str:
    """How far measurands' smallint identity has advanced: INSERT .. ON CONFLICT DO NOTHING draws a
    value from the sequence on every attempt, also when the name exists."""
    try:
        value = await db.fetchval(SEQUENCE)
    except Exception as exc:
        return f"measurands sequence not readable ({exc!r})"
    names = await db.fetchval("SELECT count(*) FROM measurands")
    return (
        f"measurands.code (smallint identity, max 32767): sequence at {value} for {names} measurand names "
        f"after {samples_rows} meter_samples rows"
    )


async def server_facts(db, args: argparse.Namespace) -> None:
    """The server's version and durability settings, for `header`."""
    args.server_version = await db.fetchval("SHOW server_version")
    args.server_note = (
        f"fsync={await db.fetchval('SHOW fsync')}, "
        f"synchronous_commit={await db.fetchval('SHOW synchronous_commit')}"
    )


def header(name: str, args: argparse.Namespace, started: datetime) -> str:
    """Date, machine, command and database of a storage scenario's report."""
    version = getattr(args, "server_version", "")
    return "\n".join(
        [
            f"## {name}, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(args.loadavg_at_start) + " (1/5/15 min)",
            f"- command (from the repository root): `{command(args)}`",
            f"- database: embedded PostgreSQL {version or ''} in a fresh scratch data_dir, default server settings "
            f"({getattr(args, 'server_note', 'fsync on')}: the production setting), pool through trio-asyncio",
        ]
    )
