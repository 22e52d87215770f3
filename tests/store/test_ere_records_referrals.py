"""`ere-proxy referrals` and `customers add --referral-code`: codes for every customer and partner,
a customer referred once, never by their own code."""

from __future__ import annotations

import re

import pytest

from proxy.ere.admin.referrals import new_code
from proxy.runtime.config import DatabaseSettings
from testkit.ere_admin import (
    EAN_2,
    EAN_3,
    IBAN_2,
    IBAN_PARTNER,
    Admin,
    customer_args,
    partner_args,
    refused,
)

CODE = re.compile(r"[0-9A-HJKMNP-TV-Z]{8}")


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
