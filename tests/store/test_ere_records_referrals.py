"""`ere-proxy referrals` and `customers add --referral-code`: codes for every customer and partner,
a customer referred once, never by their own code nor in a cycle, each referral stamped with
when (the database's clock) and by whom it was recorded."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from proxy.ere.admin.changes import default_actor
from proxy.ere.admin.referrals import new_code
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from proxy.store.migrate import load_migrations
from testkit.ere_admin import (
    EAN_2,
    EAN_3,
    IBAN_2,
    IBAN_PARTNER,
    Admin,
    customer_args,
    ean,
    partner_args,
    refused,
)

CODE = re.compile(r"[0-9A-HJKMNP-TV-Z]{8}")
EAN_4 = ean("87168900000000029")


@pytest.fixture
async def run(settings: DatabaseSettings) -> Admin:
    """Partner acme with customer c-1, partner volt (partner-account) without customers."""
    admin = Admin(settings)
    await admin.ok(*partner_args())
    await admin.ok(*customer_args())
    await admin.ok(
        "partners", "add", "volt", "--name", "Volt", "--kind", "energy-supplier",
        "--payout-model", "partner-account", "--iban", IBAN_PARTNER,
    )  # fmt: skip
    return admin


async def code_of(run: Admin, owner: str) -> str:
    code: str = (await run.json("referrals", "show", owner))["code"]
    return code


def test_codes_are_random_crockford_base32() -> None:
    codes = {new_code() for _ in range(1000)}
    assert len(codes) == 1000 and all(CODE.fullmatch(code) for code in codes)


async def test_every_customer_and_partner_gets_a_code(run: Admin) -> None:
    out = await run.ok(*customer_args("c-2", ean_code=EAN_2, iban=IBAN_2))
    (announced,) = re.findall(r"referral code (\S{8})$", out.strip())
    assert await code_of(run, "c-2") == announced
    codes = {await code_of(run, owner) for owner in ("c-1", "c-2", "acme", "volt")}
    assert len(codes) == 4 and all(CODE.fullmatch(code) for code in codes)


async def test_referred_at_enrolment_and_later(run: Admin) -> None:
    c1 = await code_of(run, "c-1")
    spelled = f"{c1[:4].lower()}-{c1[4:].lower()}".replace("1", "l").replace("0", "o")
    out = await run.ok(
        *customer_args("c-2", "--referral-code", spelled, ean_code=EAN_2, iban=IBAN_2)
    )
    assert out.strip().endswith(f"referred with {c1}")
    # A customer of another partner may be referred by c-1 too; a partner's code is allowed.
    await run.ok(
        "customers", "add", "c-3", "--partner", "volt", "--name", "Els", "--address", "Kade 2",
        "--postcode", "9999 ZZ", "--city", "Groningen", "--ean", EAN_3, "--grid-operator", "Enexis",
    )  # fmt: skip
    volt = await code_of(run, "volt")
    out = await run.ok("referrals", "record", "c-3", "--code", volt)
    assert out == f"customer c-3 was referred with {volt} by a partner's code (no fee effect)\n"

    shown = await run.json("referrals", "show", "c-1")
    assert (shown["code"], shown["owner_kind"], shown["lowers_fee"]) == (c1, "customer", True)
    assert [r["customer_id"] for r in shown["referred"]] == ["c-2"]
    partner = await run.json("referrals", "show", "volt")
    assert (partner["owner_kind"], partner["lowers_fee"]) == ("partner", False)
    assert [r["customer_id"] for r in partner["referred"]] == ["c-3"]
    by_code = await run.json("referrals", "show", c1)
    assert by_code["owner"] == "c-1"
    c2 = await run.json("customers", "show", "c-2")
    assert c2["referred_by"] == c1 and CODE.fullmatch(c2["referral_code"])
    human = await run.ok("customers", "show", "c-2")
    assert f"referred_by:   {c1}" in human and "referral_code:" in human
    table = await run.ok("referrals", "show", "c-1")
    assert "referred customers:" in table and "c-2" in table and "lowers_fee:" in table


async def test_referral_refusals(run: Admin, settings: DatabaseSettings) -> None:
    await run.ok(*customer_args("c-2", ean_code=EAN_2, iban=IBAN_2))
    c1, c2 = await code_of(run, "c-1"), await code_of(run, "c-2")
    unknown = next(code for code in iter(new_code, None) if code not in (c1, c2))
    for argv, *expected in (
        (
            ("referrals", "record", "c-1", "--code", c1),
            f"--code: {c1} is the code of customer 'c-1' itself",
        ),
        (("referrals", "record", "c-1", "--code", unknown), f"--code: no referral code {unknown}"),
        (("referrals", "record", "nobody", "--code", c2), "customer id: no customer 'nobody'"),
        (
            customer_args("c-3", "--referral-code", unknown, ean_code=EAN_3),
            f"--referral-code: no referral code {unknown}",
        ),
        (("referrals", "show", "nobody"), "no customer, partner or referral code 'nobody'"),
    ):
        await refused(run, settings, argv, *expected)
    await run.ok("referrals", "record", "c-1", "--code", c2)
    await refused(
        run,
        settings,
        ("referrals", "record", "c-1", "--code", await code_of(run, "acme")),
        f"'c-1' was referred with {c2} already; a customer is referred once",
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("", "is not a referral code"),
        ("ABCDEFG", "is not a referral code"),
        ("ABCDEFGHJ", "is not a referral code"),
        ("ABCDEFGU", "is not a referral code"),  # U is not in Crockford's alphabet
        ("ABCD\x00EFG", "is not a referral code"),
        ("ABCD'; DROP TABLE referral_codes;--", "is not a referral code"),
        ("A" * 10_000, "(10000 characters)"),
        ("ＡＢＣＤＥＦＧＨ", "is not a referral code"),  # full-width letters
    ],
)
async def test_hostile_codes(
    run: Admin, settings: DatabaseSettings, code: str, expected: str
) -> None:
    err = await refused(
        run, settings, ("referrals", "record", "c-1", "--code", code), "--code:", expected
    )
    assert "\x00" not in err
    await refused(
        run,
        settings,
        customer_args("c-2", "--referral-code", code, ean_code=EAN_2, iban=IBAN_2),
        "--referral-code:",
        expected,
    )


@pytest.mark.parametrize("owner", ["", "c 1", "x" * 65, "c-1\x1b[2J", "acme'; --"])
async def test_hostile_owner_to_show(run: Admin, settings: DatabaseSettings, owner: str) -> None:
    await refused(run, settings, ("referrals", "show", owner), "id:", "is not a valid id")


async def test_a_referral_records_when_and_by_whom(run: Admin, settings: DatabaseSettings) -> None:
    c1 = await code_of(run, "c-1")
    before = datetime.now(UTC)
    await run.ok(*customer_args("c-2", "--referral-code", c1, ean_code=EAN_2, iban=IBAN_2))
    await run.ok(*customer_args("c-3", ean_code=EAN_3, iban=IBAN_PARTNER))
    await run.ok("referrals", "record", "c-3", "--code", c1, "--actor", "ops: Els")
    after = datetime.now(UTC)
    shown = await run.json("referrals", "show", "c-1")
    stamps = {
        r["customer_id"]: (datetime.fromisoformat(r["referred_at"]), r["referred_recorded_by"])
        for r in shown["referred"]
    }
    assert set(stamps) == {"c-2", "c-3"}
    assert all(
        before - timedelta(seconds=5) <= at <= after + timedelta(seconds=5)
        for at, _ in stamps.values()
    )
    assert stamps["c-3"][1] == "ops: Els"
    assert stamps["c-2"][1] == default_actor()  # enrolled by whoever ran `customers add`
    referred = await run.json("referrals", "show", "c-3")
    assert referred["referred_by_owner"] == "c-1"
    assert referred["referred_recorded_by"] == "ops: Els" and referred["referred_at"]
    table = await run.ok("referrals", "show", "c-1")
    assert "RECORDED BY" in table and "ops: Els" in table
    assert stamps["c-3"][0].strftime("%Y-%m-%d %H:%M:%S") in table

    async with open_database(settings) as db:
        # The database's clock and nobody's word says when a referral was recorded ...
        await db.execute("INSERT INTO customers (customer_id, partner_id, name, address, postcode, city,"
                         " ean, grid_operator) VALUES ('c-4', 'volt', 'Els', 'Kade 2', '9999 ZZ',"
                         " 'Groningen', $1, 'Enexis')", EAN_4)  # fmt: skip
        await db.execute(
            "UPDATE customers SET referred_by = $1, referred_at = '2026-01-01Z' WHERE customer_id = 'c-4'",
            c1,
        )
        at, by = await db.fetchrow(
            "SELECT referred_at, referred_recorded_by FROM customers WHERE customer_id = 'c-4'"
        )
        assert at > before - timedelta(seconds=5) and by  # the database role when nobody is named
        # ... and it is never rewritten.
        for change in (
            "UPDATE customers SET referred_at = '2026-01-01Z' WHERE customer_id = 'c-3'",
            "UPDATE customers SET referred_recorded_by = 'someone else' WHERE customer_id = 'c-3'",
            "UPDATE customers SET referred_at = now() WHERE customer_id = 'c-1'",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await db.execute(change)


async def test_a_referral_never_closes_a_cycle(run: Admin, settings: DatabaseSettings) -> None:
    await run.ok(*customer_args("c-2", ean_code=EAN_2, iban=IBAN_2))
    await run.ok(*customer_args("c-3", ean_code=EAN_3, iban=IBAN_PARTNER))
    c1, c2, c3 = [await code_of(run, c) for c in ("c-1", "c-2", "c-3")]
    await run.ok("referrals", "record", "c-2", "--code", c1)  # c-1 refers c-2
    await refused(
        run,
        settings,
        ("referrals", "record", "c-1", "--code", c2),
        f"--code: {c2} would close a referral cycle: c-1 referred by c-2 referred by c-1",
    )
    await run.ok("referrals", "record", "c-3", "--code", c2)  # c-2 refers c-3
    await refused(
        run,
        settings,
        ("referrals", "record", "c-1", "--code", c3),
        f"--code: {c3} would close a referral cycle: c-1 referred by c-3 referred by c-2 referred by c-1",
    )
    async with open_database(settings) as db:  # the database refuses it as well
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="c-1 referred by c-3"):
            await db.execute("UPDATE customers SET referred_by = $1 WHERE customer_id = 'c-1'", c3)
    # A partner's code closes no cycle: c-1 may still be referred, once.
    await run.ok("referrals", "record", "c-1", "--code", await code_of(run, "volt"))


async def test_referrals_recorded_before_migration_015_are_dated_by_their_customer(
    settings: DatabaseSettings,
) -> None:
    before_015 = [migration for migration in load_migrations() if migration.version < 15]
    enrolled = datetime(2026, 4, 1, 8, tzinfo=UTC)
    async with open_database(settings, migrations=before_015) as db:
        await db.execute(
            "INSERT INTO partners (partner_id, name, kind, payout_model) VALUES ('P1', 'One', 'cpo', 'direct')"
        )
        for customer, ean_code, referred_by in (("A", EAN_2, None), ("B", EAN_3, "AAAA2222")):
            await db.execute(
                "INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean,"
                " grid_operator, referred_by, created_at) VALUES ($1, 'P1', $1, 'Laan 1', '1234 AB',"
                " 'Utrecht', $2, 'Stedin', $3, $4)",
                customer,
                ean_code,
                referred_by,
                enrolled,
            )
            if referred_by is None:
                await db.execute(
                    "INSERT INTO referral_codes (code, customer_id) VALUES ('AAAA2222', 'A')"
                )
    async with open_database(settings) as db:
        rows = await db.fetch(
            "SELECT customer_id, referred_at, referred_recorded_by FROM customers ORDER BY 1"
        )
    assert [tuple(r) for r in rows] == [("A", None, None), ("B", enrolled, "migration 015")]
