"""DatabaseStore judges each failure: refused records are kept aside, transient ones retried, and a
database that cannot keep dead letters makes the batch wait instead of losing it.

The database's answers are real: triggers the tests add raise the errors PostgreSQL would.
"""

from __future__ import annotations

import logging

import msgspec
import pytest

from proxy.capture.database_store import DatabaseStore, DatabaseUnresponsive, encode_event
from proxy.capture.events import AnyEvent, ChargerBooted, Event
from proxy.store.db import Database, open_database


def boot(n: int, identity: str | None = None) -> Event:
    return ChargerBooted(
        f"00000000-0000-0000-0004-{n:012d}",
        identity or f"CP-{n}",
        1_767_225_600.0 + n,
        "Vendor",
        "Model",
        None,
        None,
        None,
        None,
        None,
        None,
        "Accepted",
    )


def records(*events: Event) -> list[bytes]:
    return [encode_event(event)[0] for event in events]


async def refuse(db: Database, table: str, errcode: str, *, times: int | None = None) -> None:
    """A trigger on `table` raising `errcode` for identities starting with BAD- (`times` times, or always)."""
    await db.execute(
        f"CREATE SEQUENCE refusals_{table}"
    )  # not rolled back with the refused transaction
    limit = "" if times is None else f"AND nextval('refusals_{table}') <= {times}"
    await db.execute(f"""
        CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.identity LIKE 'BAD-%' {limit} THEN
                RAISE EXCEPTION 'refused' USING ERRCODE = '{errcode}';
            END IF;
            RETURN NEW;
        END $$""")
    await db.execute(
        f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION refuse_{table}()"
    )


async def test_a_transient_failure_is_retried_and_nothing_is_kept_aside(settings):
    async with open_database(settings) as db:
        await refuse(db, "charger_events", "40001", times=1)  # serialization_failure, once
        outcome = await DatabaseStore(db).store(records(boot(1), boot(2, "BAD-2"), boot(3)))
        assert (outcome.stored, outcome.dead_letters, outcome.lost) == (3, [], [])
        assert await db.fetchval("SELECT count(*) FROM charger_events") == 3


async def test_a_dead_letter_refused_for_its_data_is_lost_loudly_with_its_payload(settings, caplog):
    async with open_database(settings) as db:
        await refuse(db, "charger_events", "P0001")
        await refuse(db, "capture_dead_letters", "23514")  # check_violation
        with caplog.at_level(logging.ERROR, logger="proxy.capture_store"):
            outcome = await DatabaseStore(db).store(records(boot(1), boot(2, "BAD-2")))
        assert outcome.stored == 1 and [note.event_id for note in outcome.lost] == [
            boot(2).event_id
        ]
    [line] = [
        r
        for r in caplog.records
        if r.getMessage().startswith("dead letter refused by the database")
    ]
    assert msgspec.json.decode(line.payload, type=AnyEvent) == boot(2, "BAD-2")


async def test_a_database_that_cannot_keep_dead_letters_makes_the_batch_wait(settings):
    """No privilege on the dead-letter table (say): the batch is retried later, nothing is lost."""
    async with open_database(settings) as db:
        await refuse(db, "charger_events", "P0001")
        await refuse(db, "capture_dead_letters", "42501")  # insufficient_privilege
        with pytest.raises(DatabaseUnresponsive, match="cannot keep a dead letter"):
            await DatabaseStore(db).store(records(boot(1), boot(2, "BAD-2")))
        assert await db.fetchval("SELECT count(*) FROM capture_dead_letters") == 0
