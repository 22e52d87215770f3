"""Running `ere-proxy partners|customers|mandates|links|referrals` in-process against a test
database: the parser as `ere-proxy` mounts it, a runner returning (exit code, stdout, stderr),
a check that a refused command left the tables as they were, and the arguments of typical
records (EANs with valid check digits, IBANs, this year's mandate).
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime
from typing import Any

from proxy.ere.admin.records_cli import add_ere_admin_parsers, ere_admin_command
from proxy.ere.core.ean import check_digit
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.runtime.config import Config, DatabaseSettings
from proxy.store.db import open_database


def ean(first_17: str) -> str:
    return first_17 + str(check_digit(first_17))


EAN_1 = ean("87168712000000000")  # 871687120000000004
EAN_2 = ean("87169412345678901")
EAN_3 = ean("87168900000000012")
IBAN_PARTNER = "NL91ABNA0417164300"
IBAN_1 = "NL20INGB0001234567"
IBAN_2 = "NL44RABO0123456789"
TABLES = ("partners", "customers", "mandates", "charger_links", "referral_codes")
THIS_YEAR = datetime.now(DUTCH_TIME).year
Y, P, N = str(THIS_YEAR), str(THIS_YEAR - 1), str(THIS_YEAR + 1)  # this, the past, next year
CONSENT = (
    "--consent-by",
    "J. Jansen",
    "--consent-at",
    f"{P}-12-01T10:15:00+01:00",
    "--consent-method",
    "signed-pdf",
    "--consent-text-version",
    "v1",
)


def parser() -> argparse.ArgumentParser:
    """The groups as `ere-proxy` mounts them: a `command` subparser and a `--config` parent."""
    top = argparse.ArgumentParser(prog="ere-proxy")
    sub = top.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    add_ere_admin_parsers(sub, common)
    return top


class Admin:
    """Runs one command as the CLI would and returns (exit code, stdout, stderr)."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.config = Config(database=settings)
        self.parser = parser()

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        args = self.parser.parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        code = await ere_admin_command(self.config, args, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    async def ok(self, *argv: str) -> str:
        code, out, err = await self(*argv)
        assert (code, err) == (0, ""), (argv, err)
        return out

    async def json(self, *argv: str) -> Any:
        return json.loads(await self.ok(*argv, "--json"))


async def snapshot(settings: DatabaseSettings) -> dict[str, list[tuple[Any, ...]]]:
    async with open_database(settings) as db:
        return {
            table: [tuple(row) for row in await db.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
            for table in TABLES
        }


async def refused(
    run: Admin, settings: DatabaseSettings, argv: tuple[str, ...], *expected: str
) -> str:
    """Run `argv`, expect exit 2 with every `expected` text in one stderr line, tables unchanged."""
    before = await snapshot(settings)
    code, out, err = await run(*argv)
    assert (code, out) == (2, ""), (argv, err)
    assert err.startswith("ere-proxy: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, (argv, err)
    assert len(err) < 400, err
    assert await snapshot(settings) == before, argv
    return err


def partner_args(partner_id: str = "acme", *extra: str) -> tuple[str, ...]:
    return (
        "partners",
        "add",
        partner_id,
        "--name",
        "Acme Laadpalen B.V.",
        "--kind",
        "cpo",
        "--payout-model",
        "direct",
        *extra,
    )


def customer_args(
    customer_id: str = "c-1",
    *extra: str,
    ean_code: str = EAN_1,
    iban: str = IBAN_1,
    partner: str = "acme",
) -> tuple[str, ...]:
    return (
        "customers",
        "add",
        customer_id,
        "--partner",
        partner,
        "--name",
        "Jan Jansen",
        "--address",
        "Dorpsstraat 1",
        "--postcode",
        "1234 AB",
        "--city",
        "Utrecht",
        "--ean",
        ean_code,
        "--grid-operator",
        "Stedin",
        "--iban",
        iban,
        *extra,
    )


def mandate_args(*extra: str, ean_code: str = EAN_1, year: str = Y) -> tuple[str, ...]:
    return (
        "mandates",
        "add",
        "--ean",
        ean_code,
        "--year",
        year,
        "--issued-on",
        f"{P}-12-01",
        *CONSENT,
        *extra,
    )
