"""Which chargers a process holds were taken over by a link elsewhere (`OutboxStore.superseded`).

Each worker asks every `takeover_check_interval`; after its first look it reads only the takeovers
since the one before, so the cost follows the takeovers, not the tens of thousands of chargers
it holds. The stores here stand for two nodes on one database.
"""

from __future__ import annotations

import trio

from proxy.outbox.store import _CLAIM, OutboxStore
from proxy.runtime.config import OutboxSettings
from proxy.store import open_database


async def test_takeovers_after_a_look_are_found_by_the_next_and_only_of_held_chargers(settings):
    async with open_database(settings) as db, trio.open_nursery() as nursery:
        here, elsewhere = OutboxStore(db, OutboxSettings()), OutboxStore(db, OutboxSettings())
        await nursery.start(here.run)
        await nursery.start(elsewhere.run)
        held = {identity: await here.own(identity) for identity in ("CP-A", "CP-B", "CP-C")}
        await elsewhere.own("CP-A")  # before the first look: that look compares every epoch
        taken, since = await here.superseded(held)
        assert taken == {"CP-A"}
        del held["CP-A"]  # closed here as taken over

        await elsewhere.own("CP-B")
        await elsewhere.own("CP-X")  # not held here
        taken, since = await here.superseded(held, since)
        assert taken == {"CP-B"}
        del held["CP-B"]
        held["CP-X"] = await here.own("CP-X")  # taken back: its epoch is the newest
        taken, since = await here.superseded(held, since)
        assert taken == set()
        nursery.cancel_scope.cancel()


async def test_a_takeover_that_commits_after_a_look_with_an_earlier_stamp_is_still_found(settings):
    async with open_database(settings) as db, trio.open_nursery() as nursery:
        here = OutboxStore(db, OutboxSettings())
        await nursery.start(here.run)
        held = {"CP-A": await here.own("CP-A")}
        _, since = await here.superseded(held)
        async with db.transaction() as late:  # a claim stamped now, committed after the next look
            await late.fetch(_CLAIM, ["CP-A"])
            taken, since = await here.superseded(held, since)
            assert taken == set()  # not committed yet
        taken, _ = await here.superseded(held, since)
        assert taken == {"CP-A"}
        nursery.cancel_scope.cancel()
