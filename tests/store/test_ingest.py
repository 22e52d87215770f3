"""`record_sessions` on a real PostgreSQL: sessions supplied by partners stored once with their
source and evidence, refused for chargers that are not the partner's, conflicts never applied,
and the same charging event from two sources stored once as a duplicate.

Books from testkit.ere_books: P1's customer A has charger CP-A, P2's customer B has CP-B.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import trio

from proxy.ingest.records import RecordError
from proxy.ingest.store import record_sessions
from proxy.store import open_database
from proxy.store.purge import purge
from testkit.ere_books import add_session, seed
from testkit.ocmf_records import KEBA, KEBA_KEY, KEBA_TAMPERED
from testkit.session_files import START, external

ROW = """
SELECT s.source, s.source_ref, s.source_partner_id, s.transaction_id, s.status, s.energy_wh,
       s.energy_source, s.meter_class, s.duplicate_of, s.reported_energy_wh, r.transaction_id AS
       their_transaction, r.evidence, r.signed_data
FROM sessions s LEFT JOIN session_source_records r USING (session_id) WHERE s.session_id = $1
"""


async def record(db, *sessions):
    async with db.transaction() as tx:
        return await record_sessions(tx, sessions)


async def test_a_supplied_session_is_stored_once_with_its_source_evidence_and_energy(settings):
    async with open_database(settings) as db:
        await seed(db)
        await db.execute(
            "INSERT INTO charger_boots (identity, vendor, model, meter_type, meter_serial, "
            "booted_at) VALUES ('CP-A', 'Alfen', 'Eve', 'Iskra WM3M4C', 'S-1', now())"
        )
        session = external(transaction_id="their-tx-9", meter_start_wh=None, meter_stop_wh=None)
        result = await record(db, session)
        (item,) = result.outcomes
        assert (item.outcome, result.inserted, result.duplicates) == ("inserted", 1, 0)
        row = dict(await db.fetchrow(ROW, item.session_id))
        assert row == row | {
            "source": "api",
            "source_ref": "s-1",
            "source_partner_id": "P1",
            "transaction_id": None,
            "status": "completed",
            "energy_wh": Decimal(7500),
            "energy_source": "reported",
            "meter_class": "declared",
            "duplicate_of": None,
            "their_transaction": "their-tx-9",
            "signed_data": None,
        }
        assert "declared a MID meter" in row["evidence"]

        again = await record(db, session)
        assert [(i.outcome, i.session_id) for i in again.outcomes] == [
            ("unchanged", item.session_id)
        ]
        changed = await record(db, external(energy_wh=Decimal(7400), meter_stop_wh=None))
        assert [(i.outcome, i.session_id) for i in changed.outcomes] == [
            ("conflict", item.session_id)
        ]
        assert changed.conflicts == 1
        assert await db.fetchval("SELECT count(*) FROM sessions") == 1
        assert await db.fetchval("SELECT energy_wh FROM sessions") == 7500
        # Another source, or another partner's id space, is another id.
        other = await record(
            db,
            external(
                source="csv",
                started_at=START + timedelta(days=1),
                stopped_at=START + timedelta(days=1, hours=2),
            ),
        )
        assert other.inserted == 1


async def test_one_call_takes_an_id_once_and_keeps_bad_items_apart(settings):
    async with open_database(settings) as db:
        await seed(db)
        later = {
            "started_at": START + timedelta(days=2),
            "stopped_at": START + timedelta(days=2, hours=1),
        }
        result = await record(
            db,
            external(source_ref="x"),
            external(source_ref="x"),
            external(source_ref="x", energy_wh=Decimal(1), meter_stop_wh=None),
            external(source_ref="nul\x00", **later),
            external(source_ref="huge", energy_wh=Decimal("1e40"), **later),
            external(source_ref="y", **later),
        )
        outcomes = [i.outcome for i in result.outcomes]
        assert outcomes == ["inserted", "unchanged", "conflict", "invalid", "invalid", "inserted"]
        first = result.outcomes[0].session_id
        assert result.outcomes[1].session_id == first == result.outcomes[2].session_id
        assert isinstance(result.outcomes[3].error, RecordError)
        assert result.outcomes[3].error.field == "source_ref"
        assert result.outcomes[4].error.field == "energy_wh"
        assert await db.fetchval("SELECT count(*) FROM sessions") == 2


async def test_only_the_partners_own_chargers_take_sessions(settings):
    async with open_database(settings) as db:
        await seed(db)
        refused = await record(
            db,
            external(source_ref="b", identity="CP-B"),  # P2's customer's charger
            external(source_ref="x", identity="CP-NOBODY"),  # never seen
            external(source_ref="g", identity="CP-GRANTED"),
        )
        assert [i.outcome for i in refused.outcomes] == ["refused"] * 3
        assert str(refused.outcomes[0].error) == str(refused.outcomes[1].error)  # names no one
        await db.execute(
            "INSERT INTO partner_charger_grants (identity, partner_id) VALUES ('CP-GRANTED', 'P1')"
        )
        granted = await record(db, external(source_ref="g", identity="CP-GRANTED"))
        assert granted.inserted == 1
        assert await db.fetchval("SELECT count(*) FROM sessions WHERE identity = 'CP-B'") == 0


async def test_the_same_event_from_another_source_is_kept_as_a_duplicate_of_the_ocpp_one(settings):
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "tx-1", START, "10")  # 6 hours, 10 kWh, over OCPP
        ocpp = await db.fetchval("SELECT session_id FROM sessions WHERE transaction_id = 'tx-1'")
        twin = external(
            source="csv",
            started_at=START + timedelta(minutes=2),
            stopped_at=START + timedelta(hours=6, minutes=1),
            energy_wh=Decimal("10030"),
            meter_start_wh=None,
            meter_stop_wh=None,
        )
        stranger = external(
            source_ref="s-2",
            started_at=START + timedelta(hours=1),
            stopped_at=START + timedelta(hours=2),
            energy_wh=Decimal(3000),
            meter_start_wh=None,
            meter_stop_wh=None,
        )
        result = await record(db, twin, stranger)
        assert [(i.outcome, i.duplicate_of) for i in result.outcomes] == [
            ("duplicate", ocpp),
            ("inserted", None),
        ]
        assert (result.inserted, result.duplicates) == (1, 1)
        rows = await db.fetch("SELECT session_id, duplicate_of FROM sessions ORDER BY session_id")
        assert [tuple(r) for r in rows] == [
            (ocpp, None),
            (result.outcomes[0].session_id, ocpp),
            (result.outcomes[1].session_id, None),
        ]
        again = await record(db, twin)
        assert [(i.outcome, i.duplicate_of) for i in again.outcomes] == [("unchanged", ocpp)]


async def test_a_signed_session_outranks_the_partners_unsigned_one_but_no_one_elses(settings):
    at = datetime(2019, 8, 13, 10, 3, 15, tzinfo=UTC)  # the KEBA record's readings
    keba = {
        "started_at": at,
        "stopped_at": at + timedelta(seconds=21),
        "energy_wh": Decimal("0.1"),
        "meter_start_wh": None,
        "meter_stop_wh": None,
    }
    async with open_database(settings) as db:
        await seed(db)
        await db.execute(
            "INSERT INTO meter_keys (identity, public_key) VALUES ('CP-Z', $1)", KEBA_KEY
        )
        await db.execute(
            "INSERT INTO partner_charger_grants (identity, partner_id) VALUES ('CP-Z', 'P1')"
        )
        plain = await record(db, external(source="csv", source_ref="c", identity="CP-Z", **keba))
        signed = await record(
            db, external(source="ocpi", source_ref="o", identity="CP-Z", signed_data=KEBA, **keba)
        )
        (first,), (second,) = plain.outcomes, signed.outcomes
        assert second.outcome == "inserted"
        row = dict(await db.fetchrow(ROW, second.session_id))
        assert row["meter_class"] == "signed-verified" and row["energy_source"] == "signed"
        assert row["energy_wh"] == Decimal("0.1") and row["signed_data"] == KEBA
        assert "verifies with the charger's pinned key" in row["evidence"]
        # The unsigned one, received first, is now the duplicate of the signed one.
        assert (
            await db.fetchval(
                "SELECT duplicate_of FROM sessions WHERE session_id = $1", first.session_id
            )
            == second.session_id
        )

        # A tampered record of the same event is unverified: the verified one stays kept.
        tampered = await record(
            db,
            external(
                source="api", source_ref="t", identity="CP-Z", signed_data=KEBA_TAMPERED, **keba
            ),
        )
        (item,) = tampered.outcomes
        assert (item.outcome, item.duplicate_of) == ("duplicate", second.session_id)
        evidence = await db.fetchval(
            "SELECT evidence FROM session_source_records WHERE session_id = $1", item.session_id
        )
        assert "does not verify" in evidence

        # Charger CP-Y passes from P1 to P2: P2's signed record of an event P1 supplied
        # unsigned is kept, and P1's row is left as it is (a close compares them itself).
        await db.execute(
            "INSERT INTO meter_keys (identity, public_key) VALUES ('CP-Y', $1)", KEBA_KEY
        )
        await db.execute(
            "INSERT INTO partner_charger_grants (identity, partner_id) VALUES ('CP-Y', 'P1')"
        )
        await record(db, external(source="csv", source_ref="p1", identity="CP-Y", **keba))
        await db.execute(
            "UPDATE partner_charger_grants SET revoked_at = now() WHERE identity = 'CP-Y'"
        )
        await db.execute(
            "INSERT INTO partner_charger_grants (identity, partner_id) VALUES ('CP-Y', 'P2')"
        )
        before = await db.fetch("SELECT * FROM sessions WHERE source_partner_id = 'P1' ORDER BY 1")
        theirs = await record(
            db,
            external(
                source="ocpi",
                source_ref="p2",
                partner_id="P2",
                identity="CP-Y",
                signed_data=KEBA,
                **keba,
            ),
        )
        assert [(i.outcome, i.duplicate_of) for i in theirs.outcomes] == [("inserted", None)]
        after = await db.fetch("SELECT * FROM sessions WHERE source_partner_id = 'P1' ORDER BY 1")
        assert before == after


async def test_two_transactions_supplying_one_id_wait_for_each_other(settings):
    async with open_database(settings) as db:
        await seed(db)
        results = {}
        first_in = trio.Event()

        async def first():
            async with db.transaction() as tx:
                results["first"] = await record_sessions(tx, [external()])
                first_in.set()
                await trio.sleep(0.2)  # holds the id until it commits

        async def second():
            await first_in.wait()
            async with db.transaction() as tx:
                results["second"] = await record_sessions(tx, [external()])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            nursery.start_soon(second)
        (one,), (two,) = results["first"].outcomes, results["second"].outcomes
        assert (one.outcome, two.outcome) == ("inserted", "unchanged")
        assert one.session_id == two.session_id
        assert await db.fetchval("SELECT count(*) FROM session_source_records") == 1


async def test_the_purge_takes_what_a_source_supplied_with_its_session(settings):
    old = datetime(2019, 8, 13, 10, tzinfo=UTC)
    async with open_database(settings) as db:
        await seed(db)
        await record(db, external(started_at=old, stopped_at=old + timedelta(hours=2)))
        await record(db, external(source_ref="new"))
        # The purge takes sessions last written before its day too: as if imported back then.
        await db.execute("UPDATE sessions SET updated_at = $1 WHERE started_at = $1", old)
        counts = await purge(
            db, date(2020, 1, 1), retention_years=5, today=date(2026, 12, 1), actor="test"
        )
        assert counts["sessions"] == 1
        refs = await db.fetch(
            "SELECT s.source_ref FROM sessions s JOIN session_source_records USING (session_id)"
        )
        assert [r[0] for r in refs] == ["new"]
        assert await db.fetchval("SELECT count(*) FROM session_source_records") == 1
