"""The REV export at year end, on a real PostgreSQL with sessions captured from OCPP frames.

Quarter closes and statement rows are inserted directly (what a close would have written), so
these tests pin the export: refused until the year is closed and the provider known, drafts that
say so, every raw frame of a session in its audit pack, each export recorded, and the deadline
figure worker 0 exports.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from datetime import UTC, datetime

import msgspec
import pytest
from lxml import etree
from prometheus_client import CollectorRegistry

from proxy.capture.sessions import store_events
from proxy.cli.main import _parser
from proxy.ere.admin.accounting_cli import accounting_command
from proxy.ere.core.ean import check_digit
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.ere.core.rev_booking import validate_rev_xml
from proxy.ere.jobs.rev_export import raw_frames
from proxy.ere.jobs.worker import WorkerMetrics
from proxy.runtime.config import Config, DatabaseSettings, EreSettings
from proxy.store import open_database
from testkit.capture_feeds import captured_16, offline_session

YEAR = 2025
EAN_A = "87168712000000010" + str(check_digit("87168712000000010"))
PROVIDER = {"provider_name": "ERE Provider BV", "provider_kvk": "12345678"}


def config(settings: DatabaseSettings, **ere: str) -> Config:
    return Config(database=settings, ere=msgspec.convert(ere, EreSettings))


async def seed(db, *, closed: int = 4) -> None:
    """Customer A on CP-A with two sessions stated for 2025 (one whose charger clock is a year
    behind), a third session of CP-A that no statement counts, and `closed` quarters closed."""
    await db.execute(
        "INSERT INTO partners (partner_id, name, kind, payout_model) VALUES ('P1', 'One', 'installer', 'direct')"
    )
    await db.execute(
        "INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator)"
        " VALUES ('A', 'P1', 'Anna de Vries', 'Kerkstraat 1', '1234 AB', 'Utrecht', $1, 'Stedin')",
        EAN_A,
    )
    await db.execute(
        "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent)"
        " VALUES ($1, $2, 'A', '2025-01-01', '2025-01-01', '2025-12-31', '{}')",
        EAN_A,
        YEAR,
    )
    await store_events(
        db, captured_16("CP-A", 42, "2025-06-01", datetime(2025, 6, 1, 10, tzinfo=UTC))
    )
    await store_events(
        db, captured_16("CP-A", 43, "2025-09-20", datetime(2026, 9, 20, 10, tzinfo=UTC))
    )
    await store_events(
        db, captured_16("CP-A", 44, "2025-09-21", datetime(2025, 9, 21, 10, tzinfo=UTC))
    )
    for q in range(1, 5):
        state = "closed" if q <= closed else "closing"
        await db.execute(
            "INSERT INTO quarter_closes (quarter, shards, state) VALUES ($1, 1, $2)",
            f"{YEAR}Q{q}",
            state,
        )
    for quarter, transaction in (("2025Q2", "42"), ("2025Q3", "43")):
        await db.execute(
            "INSERT INTO statement_lines (quarter, revision, customer_id, ean, delivery_quarter, kind, kwh, ere,"
            " eur_per_ere, gross, fee_rate, fee, fee_vat, net, sessions)"
            " VALUES ($1, 1, 'A', $2, $1, 'regular', 10, 3.33, 0.30, 1.00, 0.20, 0.20, 0.03, 0.80, 1)",
            quarter,
            EAN_A,
        )
        await db.execute(
            "INSERT INTO statement_sessions (quarter, revision, customer_id, ean, delivery_quarter, kind,"
            " session_id, kwh) SELECT $1, 1, 'A', $2, $1, 'regular', session_id, 10 FROM sessions"
            " WHERE identity = 'CP-A' AND transaction_id = $3",
            quarter,
            EAN_A,
            transaction,
        )


async def rev(cfg: Config, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await accounting_command(cfg, _parser().parse_args(["rev", "export", *argv]), out, err)
    return code, out.getvalue(), err.getvalue()


def refused(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("ere-proxy: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and all(word in err for word in words), err


async def test_the_final_export_waits_for_a_closed_year_and_the_providers_kvk_and_nea_account(
    settings, tmp_path
):
    out = tmp_path / "rev"
    async with open_database(settings) as db:
        await seed(db, closed=3)
        full = config(settings, **PROVIDER, provider_nea_account="NEA-0042")
        refused(*(await rev(full, "2025", "--out", str(out)))[::2], "year:", "2025Q4")
        await db.execute("UPDATE quarter_closes SET state = 'closed' WHERE quarter = '2025Q4'")
        refused(
            *(await rev(config(settings, **PROVIDER), "2025", "--out", str(out)))[::2],
            "ere.provider_nea_account",
        )
        no_kvk = config(settings, provider_name="ERE Provider BV", provider_nea_account="NEA-0042")
        refused(*(await rev(no_kvk, "2025", "--out", str(out)))[::2], "ere.provider_kvk")
        assert not out.exists()
        assert await db.fetchval("SELECT count(*) FROM rev_exports") == 0

        code, printed, err = await rev(full, "2025", "--out", str(out))
        assert code == 0, err
        assert "REV 2025 final: 1 EANs, 20 kWh" in printed
        xml = (out / "rev-2025.xml").read_bytes()
        validate_rev_xml(xml)
        assert b"<KvkNumber>12345678</KvkNumber>" in xml
        assert b"<NeaAccountId>NEA-0042</NeaAccountId>" in xml and b"DRAFT" not in xml
        [(final, files)] = await db.fetch("SELECT final, files FROM rev_exports WHERE year = 2025")
        assert final is True
        assert {f["name"]: f["sha256"] for f in json.loads(files)} == {
            name: hashlib.sha256((out / name).read_bytes()).hexdigest()
            for name in ("rev-2025.xml", "rev-2025.csv", f"audit-2025/{EAN_A}.json")
        }


async def test_a_draft_says_draft_in_every_file_name_and_document(settings, tmp_path):
    out = tmp_path / "rev"
    async with open_database(settings) as db:
        await seed(db, closed=2)
        refused(*(await rev(config(settings), "2025", "--draft"))[::2], "ere.provider_name")
        named = config(settings, provider_name="ERE Provider BV")
        code, printed, err = await rev(named, "2025", "--draft", "--out", str(out))
        assert code == 0, err
        assert "DRAFT" in printed
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == [
            f"audit-2025-DRAFT/{EAN_A}.json",
            "rev-2025-DRAFT.csv",
            "rev-2025-DRAFT.xml",
        ]
        xml = (out / "rev-2025-DRAFT.xml").read_bytes()
        validate_rev_xml(xml)
        assert b'status="DRAFT"' in xml
        rows = list(csv.reader(io.StringIO((out / "rev-2025-DRAFT.csv").read_text())))
        assert rows[0][0] == "DRAFT" and rows[1][0] == "ean"
        pack = json.loads((out / f"audit-2025-DRAFT/{EAN_A}.json").read_text())
        assert pack["draft"] is True
        assert await db.fetchval("SELECT final FROM rev_exports") is False


async def test_audit_packs_hold_every_frame_of_their_sessions_even_with_a_charger_clock_a_year_off(
    settings, tmp_path
):
    out = tmp_path / "rev"
    async with open_database(settings) as db:
        await seed(db)
    cfg = config(settings, **PROVIDER, provider_nea_account="NEA-0042")
    code, _, err = await rev(cfg, "2025", "--out", str(out))
    assert code == 0, err
    pack = json.loads((out / "audit-2025" / f"{EAN_A}.json").read_text())
    sessions = {s["transaction_id"]: s for s in pack["sessions"]}
    assert sorted(sessions) == ["42", "43"]  # 43's frames arrived a year after its charger's times
    for transaction, session in sessions.items():
        frames = [json.loads(frame) for frame in session["raw_frames"]]
        assert [f["kind"] for f in frames] == [
            "transaction_started",
            "meter_values",
            "transaction_stopped",
        ]
        assert {f["transaction_id"] for f in frames} == {transaction}
        assert [f["meter_start"] for f in frames[:1]] == ["1000"]


async def test_frames_of_a_transaction_started_offline_include_its_provisional_id_by_index(
    settings,
):
    async with open_database(settings) as db:
        await store_events(db, offline_session(2_000_000_009, 77).events)
        frames = [json.loads(f) for f in await raw_frames(db, "CP-OFF", "77")]
        assert [f["kind"] for f in frames] == [
            "transaction_started",
            "meter_values",
            "transaction_id_assigned",
            "transaction_stopped",
        ]
        async with db.transaction() as conn:
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(
                row[0]
                for row in await conn.fetch(
                    "EXPLAIN SELECT 1 FROM charger_events WHERE identity = 'CP-OFF'"
                    " AND body->>'transaction_id' IS NOT NULL AND body->>'transaction_id' = ANY('{77}')"
                )
            )
        assert "charger_events_transaction" in plan, plan


@pytest.mark.parametrize(
    "year", ["1999", "2101", "abc", "２０２５", "2025\n", "", "9" * 5000, "-2025", "2025.0"]
)
async def test_a_year_that_is_not_a_delivery_year_is_refused_in_one_line(settings, year):
    refused(*(await rev(config(settings), year))[::2], "year:")


async def test_worker_0_exports_the_deadline_of_each_year_not_exported_yet(settings, tmp_path):
    metrics = WorkerMetrics(CollectorRegistry(), pipeline=True)
    deadline = datetime.fromisoformat("2026-03-01T00:00:00+01:00").timestamp()
    due = "ere_worker_pipeline_rev_export_deadline_timestamp_seconds"
    async with open_database(settings) as db:
        await seed(db)
        await metrics.refresh(db)
        assert metrics.registry.get_sample_value(due, {"year": "2025"}) == deadline
        assert metrics.registry.get_sample_value("ere_worker_pipeline_refresh_ok") == 1
        named = config(settings, provider_name="ERE Provider BV")
        code, _, err = await rev(named, "2025", "--draft", "--out", str(tmp_path))
        assert code == 0, err
        await metrics.refresh(db)  # a draft is not the export
        assert metrics.registry.get_sample_value(due, {"year": "2025"}) == deadline
        cfg = config(settings, **PROVIDER, provider_nea_account="NEA-0042")
        code, _, err = await rev(cfg, "2025", "--out", str(tmp_path))
        assert code == 0, err
        before = time.time()
        await metrics.refresh(db)
        assert metrics.registry.get_sample_value(due, {"year": "2025"}) is None
        refreshed = metrics.registry.get_sample_value(
            "ere_worker_pipeline_refreshed_timestamp_seconds"
        )
        assert refreshed is not None and refreshed >= before

        # A read that fails leaves the last figures, marked stale, with the time they were read.
        await db.execute("ALTER TABLE rev_exports RENAME TO rev_exports_away")
        await metrics.refresh_or_mark_stale(db)
        assert metrics.registry.get_sample_value("ere_worker_pipeline_refresh_ok") == 0
        assert (
            metrics.registry.get_sample_value("ere_worker_pipeline_refreshed_timestamp_seconds")
            == refreshed
        )
        await db.execute("ALTER TABLE rev_exports_away RENAME TO rev_exports")
        await metrics.refresh_or_mark_stale(db)
        assert metrics.registry.get_sample_value("ere_worker_pipeline_refresh_ok") == 1


async def test_a_revoked_mandate_is_exported_with_its_effective_end_and_when_it_was_revoked(
    settings, tmp_path
):
    ns = {"r": "urn:ere-proxy:rev-booking:1"}

    def mandate(xml: bytes) -> dict[str, str | None]:
        [element] = etree.fromstring(xml).findall("r:Booking/r:Mandate", ns)
        return {child.tag.split("}")[1]: child.text for child in element}

    def csv_row(text: str) -> dict[str, str]:
        [row] = list(csv.DictReader(io.StringIO(text)))
        return row

    cfg = config(settings, **PROVIDER, provider_nea_account="NEA-0042")
    async with open_database(settings) as db:
        await seed(db)
        code, _, err = await rev(cfg, "2025", "--out", str(tmp_path / "before"))
        assert code == 0, err
        xml = (tmp_path / "before" / "rev-2025.xml").read_bytes()
        assert mandate(xml) == {
            "IssuedOn": "2025-01-01",
            "ValidFrom": "2025-01-01",
            "ValidUntil": "2025-12-31",
        }
        row = csv_row((tmp_path / "before" / "rev-2025.csv").read_text())
        assert row["mandate_valid_until"] == "2025-12-31" and row["mandate_revoked_at"] == ""

        # Revoked as `mandates revoke --effective 2025-10-31` writes it (the close of 2025Q4
        # counted no session after that day).
        revoked_at = await db.fetchval(
            "UPDATE mandates SET revoked_at = now(), revoked_effective = '2025-10-31',"
            ' revocation = \'{"reason": "moved out", "channel": "cli"}\' RETURNING revoked_at'
        )
    when = revoked_at.astimezone(DUTCH_TIME).isoformat(timespec="seconds")
    code, _, err = await rev(cfg, "2025", "--out", str(tmp_path / "after"))
    assert code == 0, err
    xml = (tmp_path / "after" / "rev-2025.xml").read_bytes()
    validate_rev_xml(xml)
    assert mandate(xml) == {
        "IssuedOn": "2025-01-01",
        "ValidFrom": "2025-01-01",
        "ValidUntil": "2025-10-31",
        "RevokedAt": when,
    }
    row = csv_row((tmp_path / "after" / "rev-2025.csv").read_text())
    assert row["mandate_valid_from"] == "2025-01-01"
    assert row["mandate_valid_until"] == "2025-10-31" and row["mandate_revoked_at"] == when
