"""Property test: whatever JSON chargers send, every event is stored or kept as a dead letter.

The payload strategies of `testkit.tracker_exchanges` (arbitrary JSON and mutated OCPP 1.6
and 2.0.1 payloads of every tracked action) go through the real codec and the tracker, then
through `Journal.submit` and `Journal.run` into PostgreSQL (`DatabaseStore` in this process: the
code the store process runs). Nothing may raise; every event id must end in `charger_events` or
in `capture_dead_letters`, and nothing may be lost.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.capture.events import Event
from proxy.capture.journal import DatabaseStore, Journal
from proxy.capture.spill import SpillLog
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from proxy.store.embedded import EmbeddedPostgres
from testkit.postgres import admin_execute
from testkit.tracker_exchanges import VERSIONS, exchanges, track


@pytest.fixture
def fuzz_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A database for the whole property test (its examples share it: event ids make that safe)."""
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    trio.run(admin_execute, pg_server, f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.dsn(name)
    finally:
        trio.run(admin_execute, pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


async def store_through_the_journal(
    dsn: str, events: list[Event], spill_dir: Path
) -> tuple[set[str], int]:
    """Submit `events` to a journal writing to PostgreSQL; the ids found afterwards, and the losses."""
    async with open_database(DatabaseSettings(dsn=dsn, pool_size=2, connect_timeout=10.0)) as db:
        spill = SpillLog(spill_dir)
        journal = Journal(spill, linger=0, retry_interval=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run, DatabaseStore(db))
            for n in range(0, len(events), 3):
                journal.submit(events[n : n + 3])  # as links do: a few events per frame
            stats = journal.stats
            with trio.fail_after(60):
                while (
                    journal.spilling
                    or stats.stored + stats.replayed + stats.dead_letters + stats.lost < len(events)
                ):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        spill.close()
        ids = [e.event_id for e in events]
        found = await db.fetch(
            "SELECT event_id::text FROM charger_events WHERE event_id::text = ANY($1::text[]) "
            "UNION SELECT event_id FROM capture_dead_letters WHERE event_id = ANY($1::text[])",
            ids,
        )
        return {row[0] for row in found}, stats.lost


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(st.data())
def test_every_event_of_any_json_is_stored_or_kept_as_a_dead_letter(fuzz_dsn, data):
    version = data.draw(VERSIONS)
    events = track(version, data.draw(exchanges(version)), identity=f"CP-{uuid.uuid4().hex[:8]}")
    spill_dir = Path(tempfile.mkdtemp(prefix="ere-fuzz-spill-"))
    logging.disable(logging.WARNING)  # the tracker warns about every unparseable payload
    try:
        found, lost = trio.run(store_through_the_journal, fuzz_dsn, events, spill_dir)
    finally:
        logging.disable(logging.NOTSET)
        shutil.rmtree(spill_dir, ignore_errors=True)
    assert lost == 0
    assert found == {e.event_id for e in events}
