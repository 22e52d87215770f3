"""Migration 010 on a database that has ERE records, and what the database itself refuses after it:
overlapping link periods, deleting or rewriting links and mandates, a second revocation, a
customer referred twice or by their own code."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import asyncpg
import pytest

from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from proxy.store.migrate import load_migrations

BEFORE_010 = [migration for migration in load_migrations() if migration.version < 10]
EAN_A, EAN_B = "871687120000000004", "871694123456789017"
LINKED_AT = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
CODE = re.compile(r"[0-9A-HJKMNP-TV-Z]{8}")


async def seed_009(settings: DatabaseSettings) -> None:
    """Records as the schema before 010 held them (links with linked_at, bare mandates)."""
    async with open_database(settings, migrations=BEFORE_010) as db:
        await db.execute("""
            INSERT INTO partners (partner_id, name, kind, payout_model) VALUES ('P1', 'One', 'cpo', 'direct');
            INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, iban,
                                   referral_discount)
            VALUES ('A', 'P1', 'Anna', 'Kerkstraat 1', '1234 AB', 'Utrecht', '871687120000000004', 'Stedin',
                    'NL91ABNA0417164300', 0.02),
                   ('B', 'P1', 'Bram', 'Dorpsweg 2', '5678 CD', 'Zwolle', '871694123456789017', 'Enexis',
                    'NL91ABNA0417164300', 0);
            INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent, created_at)
            VALUES ('871687120000000004', 2026, 'A', '2026-01-01', '2026-01-01', '2026-12-31', '{"by": "Anna"}',
                    '2026-03-01T10:00:00+01:00'),
                   ('871694123456789017', 2026, 'B', '2025-12-01', '2026-01-01', '2026-12-31', '{"by": "Bram"}',
                    '2025-12-02T10:00:00+01:00');
            INSERT INTO charger_links SELECT 'CP-B', 'B', 7400;
            """)
        await db.execute(
            "INSERT INTO charger_links (identity, customer_id, max_power_w, linked_at) VALUES ('CP-A', 'A', 11000, $1)",
            LINKED_AT,
        )


async def test_migration_keeps_links_mandates_and_customers(settings: DatabaseSettings) -> None:
    await seed_009(settings)
    async with open_database(settings) as db:
        links = {
            row["identity"]: dict(row)
            for row in await db.fetch(
                "SELECT identity, customer_id, max_power_w, valid_from, valid_until, recorded_at, recorded_by, "
                "ended_at, link_id FROM charger_links"
            )
        }
        mandates = {
            row["customer_id"]: dict(row)
            for row in await db.fetch(
                "SELECT customer_id, channel, actor, consent_text_version, document_sha256, recorded_at, backdated, "
                "revoked_at, revoked_effective, revocation FROM mandates"
            )
        }
        codes = await db.fetch(
            "SELECT code, customer_id, partner_id FROM referral_codes ORDER BY 2, 3"
        )
        customers = await db.fetch("SELECT customer_id, referred_by FROM customers ORDER BY 1")
        gist = await db.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'btree_gist'")
    assert gist == 1
    a = links["CP-A"]
    assert (a["customer_id"], a["max_power_w"], a["valid_from"], a["valid_until"]) == (
        "A",
        11000,
        LINKED_AT,
        None,
    )
    assert a["recorded_at"] == LINKED_AT and a["recorded_by"] == "migration 010"
    assert a["ended_at"] is None and links["CP-B"]["link_id"] != a["link_id"]
    assert links["CP-B"]["valid_from"] <= datetime.now(UTC)
    anna, bram = mandates["A"], mandates["B"]
    assert (anna["channel"], anna["actor"], anna["consent_text_version"]) == (
        "cli",
        "migration 010",
        "unknown",
    )
    assert anna["document_sha256"] is None and anna["revoked_at"] is None
    assert anna["recorded_at"] == datetime(2026, 3, 1, 9, tzinfo=UTC)
    assert anna["backdated"] is True and bram["backdated"] is False  # recorded after / before 1 Jan
    assert [(row["customer_id"], row["partner_id"]) for row in codes] == [
        ("A", None),
        ("B", None),
        (None, "P1"),
    ]
    assert all(CODE.fullmatch(row["code"]) for row in codes)
    assert len({row["code"] for row in codes}) == 3
    assert [tuple(row) for row in customers] == [("A", None), ("B", None)]


async def refused_by_database(db, statement: str, *args: object, expected: str) -> None:
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match=expected):
        await db.execute(statement, *args)


async def test_the_database_refuses_rewriting_history(settings: DatabaseSettings) -> None:
    await seed_009(settings)
    async with open_database(settings) as db:
        await refused_by_database(
            db, "DELETE FROM charger_links", expected="a link period is ended, never deleted"
        )
        await refused_by_database(
            db, "TRUNCATE charger_links", expected="a link period is ended, never deleted"
        )
        await refused_by_database(
            db, "DELETE FROM mandates WHERE customer_id = 'A'", expected="revoked, never deleted"
        )
        await refused_by_database(
            db,
            "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from, recorded_by) "
            "VALUES ('CP-A', 'B', 7400, $1, 'x')",
            datetime(2026, 6, 1, tzinfo=UTC),
            expected="charger_links_no_overlap",
        )
        await refused_by_database(
            db,
            "UPDATE charger_links SET customer_id = 'B' WHERE identity = 'CP-A'",
            expected="only ended, once",
        )
        await db.execute(
            "UPDATE charger_links SET valid_until = $1, ended_at = now(), ended_by = 'ops', end_reason = 'moved' "
            "WHERE identity = 'CP-A'",
            datetime(2026, 6, 1, tzinfo=UTC),
        )
        await refused_by_database(
            db,
            "UPDATE charger_links SET valid_until = NULL, ended_at = NULL, ended_by = NULL, end_reason = NULL "
            "WHERE identity = 'CP-A'",
            expected="only ended, once",
        )
        await db.execute(
            "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from, recorded_by) "
            "VALUES ('CP-A', 'B', 7400, $1, 'x')",
            datetime(2026, 6, 1, tzinfo=UTC),
        )  # the next period starts where the last one ended
        await refused_by_database(
            db,
            "UPDATE mandates SET valid_until = '2026-06-30' WHERE customer_id = 'A'",
            expected="only changes by its revocation",
        )
        await refused_by_database(
            db,
            "UPDATE mandates SET recorded_at = now() - interval '1 year' WHERE customer_id = 'A'",
            expected="only changes by its revocation",
        )
        revoke = (
            "UPDATE mandates SET revoked_at = '2000-01-01Z', revoked_effective = $1, "
            """revocation = '{"reason": "x"}' WHERE customer_id = 'A'"""
        )
        await db.execute(revoke, date(2026, 9, 30))
        revoked_at = await db.fetchval("SELECT revoked_at FROM mandates WHERE customer_id = 'A'")
        assert revoked_at.year >= 2026  # the system's clock, not the value given
        await refused_by_database(db, revoke, date(2026, 8, 31), expected="revoked already")
        code_a = await db.fetchval("SELECT code FROM referral_codes WHERE customer_id = 'A'")
        code_b = await db.fetchval("SELECT code FROM referral_codes WHERE customer_id = 'B'")
        await refused_by_database(
            db,
            "UPDATE customers SET referred_by = $1 WHERE customer_id = 'A'",
            code_a,
            expected="own code",
        )
        await db.execute("UPDATE customers SET referred_by = $1 WHERE customer_id = 'A'", code_b)
        partner_code = await db.fetchval("SELECT code FROM referral_codes WHERE partner_id = 'P1'")
        await refused_by_database(
            db,
            "UPDATE customers SET referred_by = $1 WHERE customer_id = 'A'",
            partner_code,
            expected="referred once",
        )


async def test_a_mandate_records_the_systems_clock(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        await db.execute("""
            INSERT INTO partners (partner_id, name, kind, payout_model) VALUES ('P1', 'One', 'cpo', 'direct');
            INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, iban)
            VALUES ('A', 'P1', 'Anna', 'Kerkstraat 1', '1234 AB', 'Utrecht', '871687120000000004', 'Stedin',
                    'NL91ABNA0417164300')""")
        await db.execute("""
            INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent, recorded_at,
                                  backdated)
            VALUES ('871687120000000004', 2000, 'A', '2000-01-01', '2000-01-01', '2000-12-31', '{}', '1999-01-01Z',
                    false)""")
        row = await db.fetchrow("SELECT recorded_at, backdated, channel FROM mandates")
    assert row["recorded_at"].year >= 2026 and row["backdated"] is True
    assert row["channel"] == "import"  # written by hand, not through a command
