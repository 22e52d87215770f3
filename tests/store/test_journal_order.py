"""The journal keeps each charger's events in order when it starts spilling while the writer is busy.

An offline 1.6 transaction is renamed once the back-office gives its real id; the rename only
works if the session store sees it after the start. Here the start is still with the writer (in
its transaction, or in the channel behind it) when the channel overflows with the rename.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest
import trio

from proxy.capture.events import ChargerBooted
from proxy.capture.journal import DatabaseStore, Journal, StoreOutcome
from proxy.capture.spill import SpillLog
from proxy.store.db import Database, open_database
from testkit.session_events import REAL, boot, rename, session_ids, start


class HeldStore(DatabaseStore):
    """The project database; its first store waits for `release`, then stores or fails."""

    def __init__(self, db: Database, *, fail: bool) -> None:
        super().__init__(db)
        self.fail = fail
        self.entered, self.release = trio.Event(), trio.Event()
        self.first = True

    async def store(self, records: Sequence[bytes]) -> StoreOutcome:
        first, self.first = self.first, False
        if first:
            self.entered.set()
            await self.release.wait()
            if self.fail:
                raise ConnectionResetError("the database went away")
        return await super().store(records)


async def run_until_stored(journal: Journal, db: Database) -> list[str]:
    """Let the journal store everything (spill replay included) and return the session ids."""
    with trio.fail_after(20):
        while (
            journal.spilling
            or journal.stats.stored + journal.stats.replayed < journal.stats.submitted
        ):
            await trio.sleep(0.02)
    return await session_ids(db)


@pytest.mark.parametrize(
    ("outcome", "held_event", "queued_event"),
    [("commits", boot, start), ("fails", start, boot), ("hangs", start, boot)],
    ids=[
        "start-in-the-channel",
        "start-in-a-failing-transaction",
        "start-in-a-hanging-transaction",
    ],
)
async def test_a_rename_that_overflows_the_channel_is_stored_after_its_start(
    settings, tmp_path, outcome, held_event, queued_event
):
    """The writer holds one event in a transaction (which then commits, fails, or hangs until the
    store timeout), the other fills the channel and the rename overflows it: the rename comes last."""
    async with open_database(settings) as db, trio.open_nursery() as nursery:
        held = HeldStore(db, fail=outcome == "fails")
        journal = Journal(
            SpillLog(tmp_path / "spill"),
            capacity=1,
            linger=0,
            retry_interval=0.05,
            store_timeout=0.5,
        )
        await nursery.start(journal.run, held)
        journal.submit([held_event()])
        await held.entered.wait()
        journal.submit([queued_event()])  # fills the channel
        journal.submit([rename()])  # overflows it
        assert journal.spilling
        if outcome != "hangs":
            held.release.set()
        assert await run_until_stored(journal, db) == [REAL]
        assert journal.stats.database_errors == (outcome != "commits")
        nursery.cancel_scope.cancel()


async def test_a_batch_in_the_writers_hands_at_shutdown_is_spilled_and_stored_at_the_next_start(
    settings, tmp_path
):
    async with open_database(settings) as db:
        held = HeldStore(db, fail=False)
        spill = SpillLog(tmp_path / "spill")
        journal = Journal(spill, capacity=1, linger=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run, held)
            journal.submit([start()])
            await held.entered.wait()
            journal.submit([rename()])
            nursery.cancel_scope.cancel()  # shutdown while the start is in the writer's transaction
        spill.close()
        assert await session_ids(db) == []

        spill = SpillLog(tmp_path / "spill")
        restarted = Journal(spill, capacity=1, linger=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(restarted.run, DatabaseStore(db))
            with trio.fail_after(20):
                while restarted.spilling:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        spill.close()
        assert await session_ids(db) == [REAL]


async def test_an_event_the_database_refuses_is_kept_aside_and_the_rest_is_stored(
    settings, tmp_path, caplog
):
    """A poison event (here an id that is no UUID) fails its batch while the database is up: the
    others of the batch and everything after it are stored, the poison one is counted, logged and
    kept whole in the dead-letter table."""
    poison = ChargerBooted(
        "not-a-uuid", "CP-2", 1.5, "Vendor", "Model", None, None, None, None, None, None, "Accepted"
    )
    async with open_database(settings) as db, trio.open_nursery() as nursery:
        journal = Journal(SpillLog(tmp_path / "spill"), linger=0.05, retry_interval=0.05)
        await nursery.start(journal.run, DatabaseStore(db))
        journal.submit([start()])
        journal.submit([poison])
        journal.submit([rename()])
        with trio.fail_after(20):
            while journal.spilling or journal.stats.stored + journal.stats.replayed < 2:
                await trio.sleep(0.02)
        journal.submit([boot()])  # and the journal goes on directly
        with trio.fail_after(20):
            while await db.fetchval("SELECT count(*) FROM charger_boots") == 0:
                await trio.sleep(0.02)
        assert await session_ids(db) == [REAL]
        assert (journal.stats.lost, journal.stats.dead_letters) == (0, 1)
        [letter] = await db.fetch(
            "SELECT event_id, identity, kind, stage, format, payload FROM capture_dead_letters"
        )
        nursery.cancel_scope.cancel()
    assert (
        letter["event_id"],
        letter["identity"],
        letter["kind"],
        letter["stage"],
        letter["format"],
    ) == ("not-a-uuid", "CP-2", "charger_booted", "store", "json")
    assert msgspec.json.decode(letter["payload"], type=ChargerBooted) == poison
    assert [
        r.event_id
        for r in caplog.records
        if r.getMessage() == "event kept in the dead-letter table"
    ] == ["not-a-uuid"]
