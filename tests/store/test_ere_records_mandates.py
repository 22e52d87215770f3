"""`ere-proxy mandates`: consent evidence recorded with a mandate, and its revocation (once)."""

from __future__ import annotations

import getpass
import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from proxy.ere.admin import records
from proxy.ere.admin.new_records import NewMandate
from proxy.ere.admin.validation import AdminInputError
from proxy.ere.core.quarters import DUTCH_TIME, Quarter
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from testkit.ere_admin import (
    EAN_1,
    THIS_YEAR,
    Admin,
    P,
    Y,
    customer_args,
    mandate_args,
    partner_args,
    refused,
)

TODAY = datetime.now(DUTCH_TIME).date()
SIGNED = b"%PDF-1.7 signed mandate"


@pytest.fixture
async def run(settings: DatabaseSettings) -> Admin:
    admin = Admin(settings)
    await admin.ok(*partner_args())
    await admin.ok(*customer_args())
    return admin


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "mandate.pdf"
    path.write_bytes(SIGNED)
    return path


def revoke_args(*extra: str, year: str = Y) -> tuple[str, ...]:
    return ("mandates", "revoke", "--ean", EAN_1, "--year", year, "--reason", "moved out", *extra)


async def test_a_mandate_is_recorded_with_its_evidence(run: Admin, document: Path) -> None:
    await run.ok(*mandate_args("--document", str(document), "--actor", "desk-7"))
    (mandate,) = await run.json("mandates", "list")
    assert (mandate["channel"], mandate["actor"], mandate["consent_text_version"]) == (
        "cli",
        "desk-7",
        "v1",
    )
    assert mandate["document_sha256"] == hashlib.sha256(SIGNED).hexdigest()
    recorded = datetime.fromisoformat(mandate["recorded_at"])
    assert abs(recorded - datetime.now(DUTCH_TIME)) < timedelta(minutes=5)
    assert mandate["backdated"] is (date(THIS_YEAR, 1, 1) < TODAY)
    assert mandate["revocation"] is None and mandate["revoked_effective"] is None
    shown = await run.json("mandates", "show", "--ean", EAN_1, "--year", Y)
    assert shown == mandate
    human = await run.ok("mandates", "show", "--ean", EAN_1, "--year", Y)
    assert "document_sha256:" in human and hashlib.sha256(SIGNED).hexdigest() in human
    assert "consent_text_version: v1" in human
    table = await run.ok("mandates", "list")
    assert "cli by desk-7 at" in table and "BACKDATED" in table


async def test_the_actor_defaults_to_the_os_user(run: Admin) -> None:
    await run.ok(*mandate_args())
    (mandate,) = await run.json("mandates", "list")
    assert mandate["actor"] == getpass.getuser() and mandate["document_sha256"] is None


async def test_a_mandate_for_a_past_year_is_refused(run: Admin, settings: DatabaseSettings) -> None:
    await refused(
        run, settings, mandate_args(year=P), f"--year: {P} is a past year", "only within that year"
    )


async def test_a_mandate_backdated_within_its_year(run: Admin) -> None:
    """Recorded today, valid from 1 January: allowed, and marked backdated."""
    if date(THIS_YEAR, 1, 1) == TODAY:
        pytest.skip("nothing lies before today within this year")
    await run.ok(*mandate_args("--valid-from", f"{Y}-01-01"))
    (mandate,) = await run.json("mandates", "list")
    assert mandate["backdated"] is True


async def test_the_record_functions_take_channel_and_actor(
    run: Admin, settings: DatabaseSettings
) -> None:
    args = run.parser.parse_args(list(mandate_args()))
    mandate = NewMandate.from_args(args)
    async with open_database(settings) as db:
        with pytest.raises(AdminInputError, match="channel: 'fax' is not a channel"):
            await records.add_mandate(db, mandate, channel="fax", actor="partner-api")
        await records.add_mandate(db, mandate, channel="api", actor="partner-api")
        row = await db.fetchrow("SELECT channel, actor FROM mandates")
    assert tuple(row) == ("api", "partner-api")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: str(tmp / "missing.pdf"), "does not exist"),
        (lambda tmp: str(tmp), "is a directory, not a file"),
        (lambda tmp: "/dev/zero", "'/dev/zero' is not a regular file"),
        (lambda tmp: "mandate\x00.pdf", "cannot be read (not a usable file name)"),
        (lambda tmp: "x" * 5000, "cannot be read (File name too long)"),
        (lambda tmp: _sized(tmp / "big.pdf", 20 * 1024 * 1024 + 1), "is larger than 20 MB"),
        (lambda tmp: _sized(tmp / "empty.pdf", 0), "is empty"),
    ],
)
async def test_bad_documents(
    run: Admin, settings: DatabaseSettings, tmp_path: Path, make, expected: str
) -> None:
    path = make(tmp_path)
    await refused(run, settings, mandate_args("--document", path), "--document:", expected)
    await run.ok(*mandate_args())
    await refused(run, settings, revoke_args("--document", path), "--document:", expected)


def _sized(path: Path, size: int) -> str:
    with open(path, "wb") as file:
        file.truncate(size)
    return str(path)


async def test_an_unreadable_document(run: Admin, settings: DatabaseSettings) -> None:
    # A regular file that fails on read (root reads any file, so permissions would not do).
    await refused(
        run, settings, mandate_args("--document", "/proc/self/mem"), "cannot be read (Input/output"
    )


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--consent-text-version", "", "--consent-text-version: must not be empty"),
        ("--consent-text-version", "v" * 101, "too long; at most 100"),
        ("--consent-text-version", "v1\x1b[31m", "U+001B"),
        ("--consent-text-version", "v1\nv2", "U+000A"),
        ("--actor", " ", "--actor: must not be empty"),
        ("--actor", "ops\u200b", "U+200B"),
    ],
)
async def test_hostile_evidence(
    run: Admin, settings: DatabaseSettings, option: str, value: str, expected: str
) -> None:
    await refused(run, settings, mandate_args(option, value), expected)


async def test_revoking_a_mandate(run: Admin, settings: DatabaseSettings, document: Path) -> None:
    await run.ok(*mandate_args())
    last_day = f"{Y}-12-30"
    out = await run.ok(
        *revoke_args("--effective", last_day, "--document", str(document), "--reference", "R-1",
                     "--actor", "desk-7")
    )  # fmt: skip
    assert out == f"revoked mandate for EAN {EAN_1} {Y} (customer c-1): covers up to {last_day}\n"
    (mandate,) = await run.json("mandates", "list")
    assert mandate["revoked_effective"] == last_day
    assert mandate["revocation"] == {
        "channel": "cli",
        "actor": "desk-7",
        "reason": "moved out",
        "reference": "R-1",
        "document_sha256": hashlib.sha256(SIGNED).hexdigest(),
    }
    assert abs(
        datetime.fromisoformat(mandate["revoked_at"]) - datetime.now(DUTCH_TIME)
    ) < timedelta(minutes=5)
    assert mandate["valid_until"] == f"{Y}-12-31"  # the record itself is unchanged
    await refused(run, settings, revoke_args(), "was revoked already", "a mandate is revoked once")
    human = await run.ok("customers", "show", "c-1")
    assert f"revocation of the {Y} mandate:" in human and "moved out" in human
    assert f"covers up to {last_day} (moved out)" in await run.ok("mandates", "list")
    async with open_database(settings) as db:
        assert await db.fetchval("SELECT count(*) FROM mandates") == 1


async def test_revocation_takes_effect_today_by_default(run: Admin) -> None:
    await run.ok(*mandate_args())
    await run.ok(*revoke_args())
    (mandate,) = await run.json("mandates", "list")
    assert mandate["revoked_effective"] == TODAY.isoformat()


async def test_revocation_rules(run: Admin, settings: DatabaseSettings) -> None:
    await run.ok(*mandate_args("--valid-until", f"{Y}-12-30"))
    for argv, *expected in (
        (revoke_args("--effective", f"{Y}-12-31"), f"outside {P}-12-31 .. {Y}-12-30"),
        (revoke_args("--effective", f"{P}-12-30"), "--effective:", "outside"),
        (revoke_args(year=str(THIS_YEAR + 1)), f"has no mandate for {THIS_YEAR + 1}"),
    ):
        await refused(run, settings, argv, *expected)
    # The day before validity starts: revoked before it covered anything.
    await run.ok(*revoke_args("--effective", f"{P}-12-31"))


async def test_revocation_never_takes_effect_inside_a_closed_quarter(
    run: Admin, settings: DatabaseSettings
) -> None:
    if date(THIS_YEAR, 4, 1) > TODAY:
        pytest.skip("no quarter of this year is over yet")
    await run.ok(*mandate_args())
    closed = Quarter.containing(datetime.now(DUTCH_TIME)).previous()
    async with open_database(settings) as db:
        await db.execute(
            "INSERT INTO quarter_closes (quarter, state, shards) VALUES ($1, 'closed', 1)",
            str(closed),
        )
    inside = closed.last_day - timedelta(days=1)
    await refused(
        run,
        settings,
        revoke_args("--effective", inside.isoformat()),
        f"--effective: {inside} (last day covered) lies in or before closed quarter {closed}",
    )
    await run.ok(*revoke_args("--effective", closed.last_day.isoformat()))  # covers all of it


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--effective", "31-12-2026"), "--effective: '31-12-2026' is not a date"),
        (("--effective", "2026-02-30"), "is not a date"),
        (("--effective", "9" * 5000), "is not a date"),
        (("--reference", "r" * 201), "too long; at most 200"),
        (("--reference", "R-1\x07"), "U+0007"),
        (("--actor", "a" * 101), "--actor:"),
        (("--year", "2026Q4"), "is a quarter"),
    ],
)
async def test_hostile_revocations(
    run: Admin, settings: DatabaseSettings, extra: tuple[str, ...], expected: str
) -> None:
    await run.ok(*mandate_args())
    await refused(run, settings, revoke_args(*extra), expected)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("", "--reason: must not be empty"), ("x" * 501, "too long"), ("x\x00", "U+0000")],
)
async def test_hostile_revocation_reasons(
    run: Admin, settings: DatabaseSettings, reason: str, expected: str
) -> None:
    await run.ok(*mandate_args())
    argv = ("mandates", "revoke", "--ean", EAN_1, "--year", Y, "--reason", reason)
    await refused(run, settings, argv, expected)
