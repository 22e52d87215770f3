"""`ere-proxy partners|customers|mandates|links` against a real (embedded) PostgreSQL database.

Every bad-input case checks three things: exit code 2, one clear line on stderr naming the field,
and the tables exactly as they were before the command.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest

from proxy.ere.admin import records, records_cli
from proxy.ere.admin.new_records import NewPartner
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.ere.core.statement_mail import PartnerBranding
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from testkit.ere_admin import (
    CONSENT,
    EAN_1,
    EAN_2,
    EAN_3,
    IBAN_1,
    IBAN_2,
    IBAN_PARTNER,
    THIS_YEAR,
    Admin,
    N,
    P,
    Y,
    customer_args,
    mandate_args,
    partner_args,
    refused,
)


@pytest.fixture
def run(settings: DatabaseSettings) -> Admin:
    return Admin(settings)


@pytest.fixture
async def enrolled(run: Admin) -> Admin:
    """A direct partner with one customer (EAN_1)."""
    await run.ok(*partner_args())
    await run.ok(*customer_args())
    return run


# --- happy paths ---------------------------------------------------------------------------------


async def test_partners_add_list_show(run: Admin) -> None:
    out = await run.ok(*partner_args())
    assert out == "added partner acme (cpo, payout direct)\n"
    out = await run.ok(
        "partners",
        "add",
        "volt",
        "--name",
        "Volt Energie",
        "--kind",
        "energy-supplier",
        "--payout-model",
        "partner-account",
        "--iban",
        "nl91 abna 0417 1643 00",
        "--display-name",
        "Volt",
        "--colour",
        "#12aB34",
        "--logo-url",
        "https://volt.example.nl/logo.png",
        "--footer",
        "Volt Energie\nPostbus 1, Utrecht",
    )
    assert out.startswith("added partner volt (energy-supplier, payout partner-account)")

    listed = await run.json("partners", "list")
    assert [
        (p["partner_id"], p["kind"], p["payout_model"], p["iban"], p["customers"]) for p in listed
    ] == [
        ("acme", "cpo", "direct", None, 0),
        ("volt", "energy-supplier", "partner-account", IBAN_PARTNER, 0),
    ]
    table = await run.ok("partners", "list")
    assert table.splitlines()[0].split() == [
        "PARTNER",
        "KIND",
        "PAYOUT",
        "NAME",
        "IBAN",
        "CUSTOMERS",
    ]
    assert "volt" in table and IBAN_PARTNER in table

    shown = await run.json("partners", "show", "volt")
    assert shown["account_name"] == "Volt Energie"  # defaults to the name
    assert shown["language"] == "nl"  # the default
    assert shown["branding"] == {
        "display_name": "Volt",
        "colour": "#12aB34",
        "logo_url": "https://volt.example.nl/logo.png",
        "footer_text": "Volt Energie\nPostbus 1, Utrecht",
        "sender_name": None,
        "sender_address": None,
        "intro_nl": "",
        "intro_en": "",
        "closing_nl": "",
        "closing_en": "",
        "remittance_name": False,
    }
    assert PartnerBranding(**shown["branding"]).display_name == "Volt"
    default = await run.json("partners", "show", "acme")
    assert PartnerBranding(**default["branding"]) == PartnerBranding(
        display_name="Acme Laadpalen B.V."
    )
    human = await run.ok("partners", "show", "volt")
    assert "payout_model: partner-account" in human and "branding:" in human and "colour:" in human
    assert re.search(r"footer_text: +Volt Energie\\nPostbus 1, Utrecht", human)


async def test_customers_add_list_show(enrolled: Admin) -> None:
    run = enrolled
    out = await run.ok(
        *customer_args(
            "c-2",
            "--email",
            "Piet@Example.NL",
            ean_code=" ".join([EAN_2[:3], EAN_2[3:9], EAN_2[9:]]),
            iban="nl44rabo0123456789",
        ),
    )
    assert re.fullmatch(
        f"added customer c-2 \\(EAN {EAN_2}\\) of partner acme, referral code [0-9A-Z]{{8}}\n", out
    )
    await run.ok(*mandate_args(ean_code=EAN_2))
    listed = await run.json("customers", "list")
    assert [(c["customer_id"], c["ean"], c["iban"], c["mandate_years"]) for c in listed] == [
        ("c-1", EAN_1, IBAN_1, []),
        ("c-2", EAN_2, IBAN_2, [THIS_YEAR]),
    ]
    assert listed[1]["email"] == "Piet@example.nl" and listed[1]["postcode"] == "1234 AB"
    assert await run.json("customers", "list", "--partner", "nobody") == []
    table = await run.ok("customers", "list")
    assert "GRID OPERATOR" in table and EAN_2 in table and Y in table

    await run.ok("links", "add", "CP-7", "--customer", "c-2", "--max-power-w", "11000")
    shown = await run.json("customers", "show", "c-2")
    assert (
        shown["name"] == "Jan Jansen"
        and shown["grid_operator"] == "Stedin"
        and "referral_discount" not in shown
        and len(shown["referral_code"]) == 8
        and shown["referred_by"] is None
    )
    assert [(m["year"], m["valid_from"], m["valid_until"]) for m in shown["mandates"]] == [
        (THIS_YEAR, f"{Y}-01-01", f"{Y}-12-31")
    ]
    assert [link["identity"] for link in shown["links"]] == ["CP-7"]
    human = await run.ok("customers", "show", "c-2")
    assert "mandates:" in human and "chargers:" in human and "never booted" in human


async def test_partner_account_customer_may_have_no_iban(run: Admin) -> None:
    await run.ok(
        "partners",
        "add",
        "pool",
        "--name",
        "Pool",
        "--kind",
        "installer",
        "--payout-model",
        "partner-account",
        "--iban",
        IBAN_PARTNER,
        "--account-name",
        "Pool Installaties",
    )
    out = await run.ok(
        "customers",
        "add",
        "c-9",
        "--partner",
        "pool",
        "--name",
        "A. de Vries",
        "--address",
        "Kade 2",
        "--postcode",
        "9999zz",
        "--city",
        "Groningen",
        "--ean",
        EAN_3,
        "--grid-operator",
        "Enexis",
    )
    assert out.startswith("added customer c-9")
    (customer,) = await run.json("customers", "list", "--partner", "pool")
    assert customer["iban"] is None and customer["postcode"] == "9999 ZZ"
    assert (await run.json("partners", "show", "pool"))["account_name"] == "Pool Installaties"


async def test_mandates_add_and_list(enrolled: Admin) -> None:
    run = enrolled
    out = await run.ok(*mandate_args("--consent-reference", f"doc-{P}-118"))
    assert (
        out == f"added mandate for EAN {EAN_1} {Y} (customer c-1), valid {Y}-01-01 to {Y}-12-31\n"
    )
    # Next year's mandate, issued today: validity starts on 1 January of that year by default.
    today = datetime.now(DUTCH_TIME).date().isoformat()
    out = await run.ok(
        "mandates",
        "add",
        "--ean",
        EAN_1,
        "--year",
        N,
        "--issued-on",
        today,
        "--valid-until",
        f"{N}-11-30",
        "--consent-by",
        "j.jansen@example.nl",
        "--consent-at",
        f"{P}-03-10T08:00:00Z",
        "--consent-method",
        "online-checkbox",
        "--consent-text-version",
        "2025-03",
    )
    assert f"valid {N}-01-01 to {N}-11-30" in out
    listed = await run.json("mandates", "list")
    assert [(m["year"], m["customer_id"], m["partner_id"], m["issued_on"]) for m in listed] == [
        (THIS_YEAR, "c-1", "acme", f"{P}-12-01"),
        (THIS_YEAR + 1, "c-1", "acme", today),
    ]
    assert listed[0]["consent"] == {
        "by": "J. Jansen",
        "at": f"{P}-12-01T10:15:00+01:00",
        "method": "signed-pdf",
        "reference": f"doc-{P}-118",
    }
    assert listed[1]["consent"]["at"] == f"{P}-03-10T08:00:00+00:00"
    assert (listed[0]["channel"], listed[0]["consent_text_version"]) == ("cli", "v1")
    assert listed[1]["consent_text_version"] == "2025-03" and listed[1]["backdated"] is False
    assert [m["year"] for m in await run.json("mandates", "list", "--year", Y)] == [THIS_YEAR]
    assert len(await run.json("mandates", "list", "--customer", "c-1", "--ean", EAN_1)) == 2
    assert await run.json("mandates", "list", "--customer", "c-2") == []
    table = await run.ok("mandates", "list")
    assert "VALID FROM" in table and "signed-pdf by J. Jansen" in table


async def test_links_add_list_remove_with_meter_evidence(
    enrolled: Admin, settings: DatabaseSettings
) -> None:
    run = enrolled
    assert await run.ok("links", "add", "CP-1", "--customer", "c-1", "--max-power-w", "11000") == (
        f"linked charger CP-1 to customer c-1 (EAN {EAN_1})\n"
    )
    await run.ok("links", "add", "CP 2", "--customer", "c-1", "--max-power-w", "3680.5")
    async with open_database(settings) as db:
        await db.execute(
            "INSERT INTO charger_boots (identity, vendor, model, meter_type, meter_serial, booted_at, meter_class) "
            "VALUES ('CP-1', 'Alfen', 'Eve Single', 'Carlo Gavazzi EM340', 'MS-0042', $1, 'signed-verified')",
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        )
    links = await run.json("links", "list")
    assert [
        (x["identity"], x["customer_id"], x["ean"], x["max_power_w"], x["meter_class"])
        for x in links
    ] == [
        ("CP 2", "c-1", EAN_1, 3680.5, None),
        ("CP-1", "c-1", EAN_1, 11000, "signed-verified"),
    ]
    assert links[0]["last_boot"] is None
    assert links[1]["last_boot"] == {
        "booted_at": "2026-01-02T03:04:05+00:00",
        "vendor": "Alfen",
        "model": "Eve Single",
        "meter_type": "Carlo Gavazzi EM340",
        "meter_serial": "MS-0042",
    }
    lines = (await run.ok("links", "list")).splitlines()
    assert lines[0].split()[:4] == ["IDENTITY", "CUSTOMER", "EAN", "MAX"]
    assert "never booted" in lines[1] and "3680.5" in lines[1]
    assert (
        "signed-verified" in lines[2]
        and "Carlo Gavazzi EM340" in lines[2]
        and "MS-0042" in lines[2]
    )
    assert await run.json("links", "list", "--customer", "other") == []

    out = await run.ok("links", "remove", "CP 2", "--reason", "charger replaced")
    assert out.startswith("ended link of charger CP 2 to customer c-1 at ")
    assert [x["identity"] for x in await run.json("links", "list")] == ["CP-1"]


async def test_sql_looking_text_is_stored_as_text(
    enrolled: Admin, settings: DatabaseSettings
) -> None:
    run = enrolled
    name = "Robert'); DROP TABLE customers; --"
    await run.ok(
        *customer_args("c-2", ean_code=EAN_2)[:6], name, *customer_args("c-2", ean_code=EAN_2)[7:]
    )
    shown = await run.json("customers", "show", "c-2")
    assert shown["name"] == name
    assert [c["customer_id"] for c in await run.json("customers", "list")] == ["c-1", "c-2"]


async def test_control_characters_stored_by_other_writers_never_reach_the_terminal(
    enrolled: Admin, settings: DatabaseSettings
) -> None:
    async with open_database(settings) as db:
        await db.execute("UPDATE customers SET name = $1", "Jan\x1b[2J\rJansen")
    table = await enrolled.ok("customers", "list")
    assert "\x1b" not in table and "\r" not in table and "Jan?[2J?Jansen" in table
    assert (await enrolled.json("customers", "show", "c-1"))[
        "name"
    ] == "Jan\x1b[2J\rJansen"  # JSON escapes it


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iban", "expected"),
    [
        ("NL91ABNA0417164301", "invalid checksum digits"),
        ("NL91ABNA041716430", "invalid iban length"),
        ("XX91ABNA0417164300", "unknown country-code"),
        ("BR1800360305000010009795493C1", "outside the SEPA zone"),
        ("NL91'; DROP TABLE customers;--", "characters or a layout no IBAN has"),
        ("NL91\x00ABNA0417164300", "characters or a layout no IBAN has"),
        ("N" * 5000, "at most 34 characters"),
    ],
)
async def test_invalid_iban(
    enrolled: Admin, settings: DatabaseSettings, iban: str, expected: str
) -> None:
    await refused(
        enrolled, settings, customer_args("c-2", ean_code=EAN_2, iban=iban), "--iban:", expected
    )
    await refused(enrolled, settings, partner_args("other", "--iban", iban), "--iban:", expected)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (EAN_1[:-1] + str((int(EAN_1[-1]) + 1) % 10), "fails its check digit"),
        (EAN_1[:17], "has 17 digits; it must have 18"),
        (EAN_1[:16] + "AB", "'A' at position 17"),
        ("87168712000000000x", "'x' at position 18"),
        ("871687120000000004'; DROP TABLE mandates;--", "only digits are allowed"),
        ("8" * 10_000, "an EAN has 18 digits"),
        ("", "has 0 digits"),
    ],
)
async def test_invalid_ean(
    enrolled: Admin, settings: DatabaseSettings, code: str, expected: str
) -> None:
    await refused(enrolled, settings, customer_args("c-2", ean_code=code), "--ean:", expected)
    await refused(enrolled, settings, mandate_args(ean_code=code), "--ean:", expected)


async def test_duplicate_mandate_names_its_holder(
    enrolled: Admin, settings: DatabaseSettings
) -> None:
    run = enrolled
    await run.ok(*mandate_args())
    await run.ok(*customer_args("c-2", ean_code=EAN_2, iban=IBAN_2))
    for argv in (
        mandate_args(),
        mandate_args(ean_code=" ".join(EAN_1[i : i + 6] for i in range(0, 18, 6))),
    ):
        await refused(
            run,
            settings,
            argv,
            f"EAN {EAN_1} already has a mandate for {Y}",
            "held by customer 'c-1'",
            "only one provider per EAN per year",
        )
    await run.ok(*mandate_args(year=N))  # another year is another mandate


async def test_duplicate_mandate_from_a_concurrent_writer(
    enrolled: Admin, settings: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check passes (another writer's row is not seen yet); the primary key refuses it."""
    await enrolled.ok(*mandate_args())

    async def nobody(*args: object) -> None:
        return None

    monkeypatch.setattr(records, "_mandate_holder", nobody)
    await refused(
        enrolled,
        settings,
        mandate_args(),
        f"already has a mandate for {Y}",
        "held by customer 'c-1'",
    )


async def test_a_constraint_that_slips_past_validation_is_a_clear_error(
    run: Admin, settings: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    unchecked = NewPartner(
        "bad id!", "X", "cpo", "direct", None, None, PartnerBranding(display_name="X")
    )
    monkeypatch.setitem(records_cli._PARSERS, ("partners", "add"), lambda args: unchecked)
    await refused(
        run,
        settings,
        partner_args(),
        "the database refused the value (partners.partners_partner_id_check)",
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--valid-from", f"{P}-12-31"), f"--valid-from: {P}-12-31 is outside {Y}"),
        (("--valid-until", f"{N}-01-01"), f"--valid-until: {N}-01-01 is outside {Y}"),
        (
            ("--valid-from", f"{Y}-06-01", "--valid-until", f"{Y}-05-31"),
            f"is after --valid-until {Y}-05-31",
        ),
        (("--valid-from", f"{Y}-13-01"), f"--valid-from: '{Y}-13-01' is not a date"),
        (("--valid-from", "1 januari 2026"), "write it as YYYY-MM-DD"),
    ],
)
async def test_mandate_dates_outside_the_year(
    enrolled: Admin, settings: DatabaseSettings, extra: tuple[str, ...], expected: str
) -> None:
    await refused(enrolled, settings, mandate_args(*extra), expected)


async def test_mandate_issue_date_and_consent_rules(
    enrolled: Admin, settings: DatabaseSettings
) -> None:
    run = enrolled
    base = ("mandates", "add", "--ean", EAN_1, "--year", Y, "--consent-text-version", "v1")
    future = (date.today() + timedelta(days=3)).isoformat()
    for argv, expected in (
        (
            (*base, "--issued-on", f"{Y}-02-01", "--valid-from", f"{Y}-01-01", *CONSENT),
            "is not backdated",
        ),
        ((*base, "--issued-on", future, *CONSENT), f"--issued-on: {future} is in the future"),
        (
            (
                *base,
                "--issued-on",
                f"{P}-12-01",
                "--consent-by",
                "J",
                "--consent-at",
                f"{P}-12-01T10:15:00",
                "--consent-method",
                "signed-pdf",
            ),
            f"--consent-at: '{P}-12-01T10:15:00' has no UTC offset",
        ),
        (
            (
                *base,
                "--issued-on",
                f"{P}-12-01",
                "--consent-by",
                "J",
                "--consent-at",
                "yesterday",
                "--consent-method",
                "signed-pdf",
            ),
            "is not an ISO 8601 timestamp",
        ),
        (
            (
                *base,
                "--issued-on",
                f"{P}-12-01",
                "--consent-by",
                "J",
                "--consent-at",
                f"{Y}-01-01T00:30:00+01:00",
                "--consent-method",
                "signed-pdf",
                "--valid-from",
                f"{P}-12-31",
            ),
            f"outside {Y}",
        ),
        (
            (
                *base,
                "--issued-on",
                f"{P}-12-01",
                "--valid-from",
                f"{Y}-01-01",
                "--consent-by",
                "J",
                "--consent-at",
                f"{Y}-01-02T09:00:00+01:00",
                "--consent-method",
                "signed-pdf",
            ),
            "consent must come first",
        ),
        (
            (
                *base,
                "--issued-on",
                f"{P}-12-01",
                "--consent-by",
                "J",
                "--consent-at",
                (datetime.now(UTC) + timedelta(days=2)).isoformat(),
                "--consent-method",
                "signed-pdf",
            ),
            "is in the future",
        ),
        (
            (
                *base,
                "--issued-on",
                f"{P}-12-01",
                "--consent-by",
                "J",
                "--consent-at",
                f"{P}-12-01T10:15:00Z",
                "--consent-method",
                "fax",
            ),
            "--consent-method: 'fax' is not a consent method; use one of signed-pdf",
        ),
        (
            (
                *base,
                "--issued-on",
                f"{P}-12-01",
                "--consent-by",
                "  ",
                "--consent-at",
                f"{P}-12-01T10:15:00Z",
                "--consent-method",
                "signed-pdf",
            ),
            "--consent-by: must not be empty",
        ),
    ):
        await refused(run, settings, argv, expected)


@pytest.mark.parametrize(
    ("year", "expected"),
    [
        ("2026Q5", "a year has quarters 1 to 4"),
        ("2026Q3", "2026Q3 is a quarter; a mandate covers a whole calendar year: give 2026"),
        ("26", "'26' is not a year"),
        ("1999", "1999 is out of range"),
        ("2101", "2101 is out of range"),
        ("2026; DROP TABLE mandates", "is not a year"),
    ],
)
async def test_mandate_year(
    enrolled: Admin, settings: DatabaseSettings, year: str, expected: str
) -> None:
    err = await refused(enrolled, settings, mandate_args(year=year), "--year:", expected)
    if "Q" in year:
        assert "whole calendar year" in err
    await refused(enrolled, settings, ("mandates", "list", "--year", year), "--year:", expected)


async def test_unknown_records(enrolled: Admin, settings: DatabaseSettings) -> None:
    run = enrolled
    for argv, expected in (
        (customer_args("c-2", ean_code=EAN_2, partner="nobody"), "--partner: no partner 'nobody'"),
        (mandate_args(ean_code=EAN_3), f"--ean: EAN {EAN_3} is not a known customer's"),
        (
            ("links", "add", "CP-1", "--customer", "nobody", "--max-power-w", "7400"),
            "--customer: no customer 'nobody'",
        ),
        (("links", "remove", "CP-9", "--reason", "x"), "charger 'CP-9' has no open link period"),
        (("links", "end", "CP-9", "--reason", "x"), "charger 'CP-9' has no open link period"),
        (("partners", "show", "nobody"), "partner id: no partner 'nobody'"),
        (("customers", "show", "nobody"), "customer id: no customer 'nobody'"),
    ):
        await refused(run, settings, argv, expected)


async def test_duplicates(enrolled: Admin, settings: DatabaseSettings) -> None:
    run = enrolled
    await run.ok("links", "add", "CP-1", "--customer", "c-1", "--max-power-w", "7400")
    for argv, *expected in (
        (partner_args(), "partner id: partner 'acme' already exists"),
        (customer_args("c-1", ean_code=EAN_2), "customer id: customer 'c-1' already exists"),
        (customer_args("c-2"), f"--ean: EAN {EAN_1} already belongs to customer 'c-1'"),
        (
            ("links", "add", "CP-1", "--customer", "c-1", "--max-power-w", "7400"),
            "charger 'CP-1' is linked to customer 'c-1' from ",
            "(open); use `links move` or `links end`",
        ),
    ):
        await refused(run, settings, argv, *expected)


async def test_partner_rules(run: Admin, settings: DatabaseSettings) -> None:
    pa = ("--payout-model", "partner-account")
    for argv, *expected in (
        (
            ("partners", "add", "p", "--name", "P", "--kind", "cpo", *pa),
            "--iban: is required for the partner-account",
        ),
        (
            (
                "partners",
                "add",
                "p",
                "--name",
                "P",
                "--kind",
                "utility",
                "--payout-model",
                "direct",
            ),
            "--kind: 'utility' is not a partner kind; use one of cpo, installer, energy-supplier",
        ),
        (
            ("partners", "add", "p", "--name", "P", "--kind", "cpo", "--payout-model", "monthly"),
            "--payout-model: 'monthly' is not a payout model; use one of direct, partner-account",
        ),
        (
            (
                "partners",
                "add",
                "p",
                "--name",
                "P",
                "--kind",
                "cpo",
                *pa,
                "--iban",
                IBAN_PARTNER,
                "--account-name",
                "⚡🔌",
            ),
            "--account-name:",
            "no characters a SEPA transfer can carry",
        ),
        (
            (
                "partners",
                "add",
                "p",
                "--name",
                "P",
                "--kind",
                "cpo",
                *pa,
                "--iban",
                IBAN_PARTNER,
                "--account-name",
                "@@@",
            ),
            "--account-name:",
        ),
        (
            (
                "partners",
                "add",
                "p",
                "--name",
                "P",
                "--kind",
                "cpo",
                "--payout-model",
                "direct",
                "--account-name",
                "P",
            ),
            "--account-name: needs --iban",
        ),
        (partner_args("p", "--colour", "red"), "--colour: brand colour must look like #1a2b3c"),
        (partner_args("p", "--colour", "#12345"), "--colour:"),
        (partner_args("p", "--colour", "#123456;background:url(x)"), "--colour:"),
        (
            partner_args("p", "--logo-url", "http://acme.example/logo.png"),
            "--logo-url: logo URL must be an https://",
        ),
        (partner_args("p", "--logo-url", "javascript:alert(1)"), "--logo-url:"),
        (partner_args("p", "--logo-url", "https://acme.example/a b.png"), "--logo-url:"),
        (partner_args("p", "--footer", "x" * 2001), "--footer:", "too long"),
        (partner_args("p", "--display-name", "Acme\x1b[31m"), "--display-name:", "U+001B"),
        (partner_args(".p"), "partner id: '.p' is not a valid id"),
    ):
        await refused(run, settings, argv, *expected)


async def test_customer_field_rules(enrolled: Admin, settings: DatabaseSettings) -> None:
    run = enrolled
    base = customer_args("c-2", ean_code=EAN_2, iban=IBAN_2)
    no_iban = base[: base.index("--iban")]

    def replaced(option: str, value: str) -> tuple[str, ...]:
        at = base.index(option)
        return (*base[: at + 1], value, *base[at + 2 :])

    for argv, *expected in (
        (no_iban, "--iban: is required: partner 'acme' pays its customers directly"),
        (replaced("--postcode", "0123 AB"), "--postcode: '0123 AB' is not a Dutch postcode"),
        (replaced("--postcode", "1234 SS"), "the letters SS are never issued"),
        (replaced("--postcode", "SW1A 1AA"), "write it like 1234 AB"),
        (
            (*base, "--email", "jan@@example.nl"),
            "--email: 'jan@@example.nl' is not an e-mail address",
        ),
        ((*base, "--email", "jan@localhost"), "is not an e-mail address"),
        ((*base, "--email", "jan jansen@example.nl"), "is not an e-mail address"),
        ((*base, "--email", "jan@example.nl\r\nBcc: x@evil.example"), "is not an e-mail address"),
        (replaced("--grid-operator", ""), "--grid-operator: must not be empty"),
        (customer_args("c 2", ean_code=EAN_2), "customer id: 'c 2' is not a valid id"),
        (customer_args("x" * 65, ean_code=EAN_2), "customer id:", "(65 characters)"),
        (customer_args("c2'; DROP TABLE customers;--", ean_code=EAN_2), "is not a valid id"),
    ):
        await refused(run, settings, argv, *expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("J" * 10_000, "(10000 characters) is too long; at most"),
        ("Jan\x00Jansen", "U+0000"),
        ("Jan\nJansen", "U+000A"),
        ("Jan\x1b]0;pwned\x07", "U+001B"),
        ("Jan\u202eesnaJ", "U+202E"),  # right-to-left override
        ("Jan\u200bJansen", "U+200B"),  # zero-width space
        ("Jan\u2028Jansen", "U+2028"),
        ("\x7f", "U+007F"),
    ],
)
async def test_hostile_names(
    enrolled: Admin, settings: DatabaseSettings, value: str, expected: str
) -> None:
    args = customer_args("c-2", ean_code=EAN_2, iban=IBAN_2)
    at = args.index("--name") + 1
    err = await refused(
        enrolled, settings, (*args[:at], value, *args[at + 1 :]), "--name:", expected
    )
    assert "\x00" not in err and "\x1b" not in err
    await refused(
        enrolled, settings, partner_args("p", "--display-name", value), "--display-name:", expected
    )


@pytest.mark.parametrize(
    ("identity", "watts", "expected"),
    [
        ("CP:1", "7400", "must not contain ':'"),
        ("C" * 49, "7400", "1 to 48 characters"),
        ("CP\x00", "7400", "must not contain ':', '/', control"),
        ("CP-1", "0", "--max-power-w: 0 W is out of range"),
        ("CP-1", "-7400", "is not a number of watts"),
        ("CP-1", "NaN", "is not a number of watts"),
        ("CP-1", "1e400", "is not a number of watts"),
        ("CP-1", "1000000.001", "out of range"),
        ("CP-1", "7400 W", "is not a number of watts"),
    ],
)
async def test_bad_links(
    enrolled: Admin, settings: DatabaseSettings, identity: str, watts: str, expected: str
) -> None:
    await refused(
        enrolled,
        settings,
        ("links", "add", identity, "--customer", "c-1", "--max-power-w", watts),
        expected,
    )


async def test_missing_required_option_is_a_usage_error(run: Admin) -> None:
    with pytest.raises(SystemExit) as exited:
        await run("customers", "add", "c-1", "--partner", "acme")
    assert exited.value.code == 2


async def test_unreachable_database_exits_1() -> None:
    run = Admin(DatabaseSettings(dsn="postgresql://nobody@127.0.0.1:1/none", connect_timeout=0.3))
    code, out, err = await run("partners", "list")
    assert (code, out) == (1, "") and err.startswith(
        "ere-proxy: database error: DatabaseUnavailable"
    )
    code, _, err = await run(*partner_args("bad id"))  # bad input is reported without a database
    assert code == 2 and "partner id:" in err
