"""`ere-proxy partners|customers|mandates|links`: the ERE domain records, managed from the shell.

Until partners enrol customers over the API, operators keep these tables with the commands below:

* `partners add|list|show`: CPOs, installers and energy suppliers, their payout model (`direct`:
  each customer is paid to their own IBAN; `partner-account`: one transfer to the partner's
  IBAN) and the branding of their white-label statements.
* `customers add|list|show`: the holder of one grid connection (EAN) and where they are paid.
* `mandates add|list`: the machtiging per EAN per calendar year, with its consent record.
* `links add|list|remove`: which customer's connection a charger charges on; `list` shows the
  meter class session capture gave the charger and the meter its last boot reported.

Every input is checked before anything is written (`proxy.ere.admin.validation`), and every
command writes in one transaction (`proxy.ere.admin.records`), so bad input leaves the tables as
they were. `list` and `show` print a table or fields, or JSON with `--json`; tables print stored
control characters as `?` (and line breaks as `\\n`), whoever wrote them.

Errors: bad input, duplicates and unknown records print one line `ere-proxy: <field>: <what is
wrong>` and exit 2; a constraint violation that slips past these checks (a concurrent writer)
becomes the same kind of message and exit code. A database that cannot be reached or fails
otherwise exits 1. Exit 0 means done.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

from proxy.ere.admin.records import (
    REFUSED_BY_DATABASE,
    add_customer,
    add_link,
    add_mandate,
    add_partner,
    get_customer,
    get_partner,
    list_customers,
    list_links,
    list_mandates,
    list_partners,
    remove_link,
    violation_message,
)
from proxy.ere.admin.validation import (
    CONSENT_METHODS,
    PARTNER_KINDS,
    PAYOUT_MODELS,
    AdminInputError,
    NewCustomer,
    NewLink,
    NewMandate,
    NewPartner,
    normalise_ean,
    one_line,
    parse_year,
    validate_charger_identity,
    validate_id,
)
from proxy.runtime.config import Config
from proxy.store.connection import Connection
from proxy.store.db import DATABASE_ERRORS, open_database

__all__ = ["add_ere_admin_parsers", "ere_admin_command"]

EXIT_OK, EXIT_STORE, EXIT_INPUT = 0, 1, 2

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def add_ere_admin_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `partners`, `customers`, `mandates` and `links` groups; `common` carries `--config`."""

    def choices(allowed: Sequence[str]) -> str:
        return "{" + ",".join(allowed) + "}"

    partners = sub.add_parser(
        "partners", help="manage ERE partners (CPOs, installers, energy suppliers)"
    )
    partners.set_defaults(ere_group="partners")
    actions = partners.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="add a partner")
    add.add_argument("partner_id")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", required=True, metavar=choices(PARTNER_KINDS))
    add.add_argument("--payout-model", required=True, metavar=choices(PAYOUT_MODELS))
    add.add_argument("--iban", help="the partner's account (required for partner-account)")
    add.add_argument("--account-name", help="holder of that account (default: the partner's name)")
    add.add_argument("--display-name", help="name on statements (default: the partner's name)")
    add.add_argument("--colour", help="brand colour, #rrggbb")
    add.add_argument("--logo-url", help="https:// URL of the logo on statements")
    add.add_argument("--footer", help="footer text of statements (may span lines)")
    actions.add_parser("list", parents=[common], help="list partners").add_argument(
        "--json", action="store_true"
    )
    show = actions.add_parser("show", parents=[common], help="show one partner")
    show.add_argument("partner_id")
    show.add_argument("--json", action="store_true")

    customers = sub.add_parser("customers", help="manage ERE customers (connection holders)")
    customers.set_defaults(ere_group="customers")
    actions = customers.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="add a customer")
    add.add_argument("customer_id")
    add.add_argument(
        "--partner", required=True, help="id of the partner that enrolled the customer"
    )
    add.add_argument("--name", required=True, help="name of the connection holder")
    add.add_argument("--address", required=True, help="street and number")
    add.add_argument("--postcode", required=True, help="Dutch postcode, 1234 AB")
    add.add_argument("--city", required=True)
    add.add_argument("--ean", required=True, help="18-digit EAN of the connection")
    add.add_argument("--grid-operator", required=True)
    add.add_argument(
        "--iban", help="account to pay (required when the partner's payout model is direct)"
    )
    add.add_argument("--email", help="address statements are sent to")
    listing = actions.add_parser("list", parents=[common], help="list customers")
    listing.add_argument("--partner", help="only this partner's customers")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser(
        "show", parents=[common], help="show one customer with mandates and chargers"
    )
    show.add_argument("customer_id")
    show.add_argument("--json", action="store_true")

    mandates = sub.add_parser(
        "mandates", help="manage ERE mandates (one per EAN per calendar year)"
    )
    mandates.set_defaults(ere_group="mandates")
    actions = mandates.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="record a mandate")
    add.add_argument("--ean", required=True, help="EAN of a known customer")
    add.add_argument("--year", required=True, help="calendar year the mandate covers")
    add.add_argument("--issued-on", required=True, help="date the mandate was issued, YYYY-MM-DD")
    add.add_argument(
        "--valid-from", help="first day covered (default: 1 January, or the issue date if later)"
    )
    add.add_argument("--valid-until", help="last day covered (default: 31 December)")
    add.add_argument("--consent-by", required=True, help="who gave consent")
    add.add_argument("--consent-at", required=True, help="when, ISO 8601 with UTC offset")
    add.add_argument("--consent-method", required=True, metavar=choices(CONSENT_METHODS))
    add.add_argument("--consent-reference", help="document or record id of the consent")
    listing = actions.add_parser("list", parents=[common], help="list mandates")
    listing.add_argument("--year")
    listing.add_argument("--customer")
    listing.add_argument("--ean")
    listing.add_argument("--json", action="store_true")

    links = sub.add_parser("links", help="link chargers to customers' connections")
    links.set_defaults(ere_group="links")
    actions = links.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="link a charger to a customer")
    add.add_argument("identity", help="the charger's OCPP identity")
    add.add_argument("--customer", required=True)
    add.add_argument("--max-power-w", required=True, help="the charger's maximum power in watts")
    listing = actions.add_parser(
        "list", parents=[common], help="list links with each charger's meter evidence"
    )
    listing.add_argument("--customer", help="only this customer's chargers")
    listing.add_argument("--json", action="store_true")
    remove = actions.add_parser("remove", parents=[common], help="unlink a charger")
    remove.add_argument("identity")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "-"
    return _UNPRINTABLE.sub("?", str(value).replace("\n", "\\n"))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], stdout: TextIO) -> None:
    cells = [list(header), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=stdout
        )


def _print_fields(record: dict[str, Any], stdout: TextIO, indent: str = "") -> None:
    width = max(len(key) for key in record) + 1
    for key, value in record.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:", file=stdout)
            _print_fields(value, stdout, indent + "  ")
        else:
            print(f"{indent}{key + ':':<{width}} {_cell(value)}", file=stdout)


def _consent_cell(consent: dict[str, Any]) -> str:
    return f"{consent.get('method')} by {consent.get('by')} at {consent.get('at')}"


def _link_row(link: dict[str, Any]) -> list[Any]:
    boot = link["last_boot"]
    if boot is None:
        return [
            link["identity"],
            link["customer_id"],
            link["ean"],
            link["max_power_w"],
            "never booted",
            "-",
            "-",
            "-",
        ]
    return [
        link["identity"],
        link["customer_id"],
        link["ean"],
        link["max_power_w"],
        link["meter_class"],
        boot["meter_type"],
        boot["meter_serial"],
        boot["booted_at"],
    ]


_LINK_HEADER = (
    "IDENTITY",
    "CUSTOMER",
    "EAN",
    "MAX W",
    "METER CLASS",
    "METER TYPE",
    "METER SERIAL",
    "LAST BOOT",
)
_MANDATE_HEADER = (
    "EAN",
    "YEAR",
    "CUSTOMER",
    "PARTNER",
    "ISSUED",
    "VALID FROM",
    "VALID UNTIL",
    "CONSENT",
)


def _mandate_row(mandate: dict[str, Any]) -> list[Any]:
    return [
        mandate["ean"],
        mandate["year"],
        mandate["customer_id"],
        mandate["partner_id"],
        mandate["issued_on"],
        mandate["valid_from"],
        mandate["valid_until"],
        _consent_cell(mandate["consent"]),
    ]


def _optional(value: str | None, check: Callable[[str, str], Any], field: str) -> Any:
    return None if value is None else check(value, field)


# What each action makes of its arguments: all checks that need no database, run before a
# connection is opened, so bad input never reaches it.
_PARSERS: dict[tuple[str, str], Callable[[argparse.Namespace], Any]] = {
    ("partners", "add"): NewPartner.from_args,
    ("partners", "list"): lambda args: None,
    ("partners", "show"): lambda args: validate_id(args.partner_id, "partner id"),
    ("customers", "add"): NewCustomer.from_args,
    ("customers", "list"): lambda args: _optional(args.partner, validate_id, "--partner"),
    ("customers", "show"): lambda args: validate_id(args.customer_id, "customer id"),
    ("mandates", "add"): NewMandate.from_args,
    ("mandates", "list"): lambda args: {
        "year": _optional(args.year, parse_year, "--year"),
        "customer_id": _optional(args.customer, validate_id, "--customer"),
        "ean": _optional(args.ean, normalise_ean, "--ean"),
    },
    ("links", "add"): NewLink.from_args,
    ("links", "list"): lambda args: _optional(args.customer, validate_id, "--customer"),
    ("links", "remove"): lambda args: validate_charger_identity(args.identity),
}


class _Output:
    """Where an action prints: a table or fields for people, or JSON with `--json`."""

    def __init__(self, stdout: TextIO, as_json: bool) -> None:
        self.stdout, self.as_json = stdout, as_json

    def line(self, text: str) -> None:
        print(text, file=self.stdout)

    def json_or(self, value: Any, human: Callable[[], None]) -> None:
        if self.as_json:
            self.line(json.dumps(_json_value(value), indent=2, ensure_ascii=False))
        else:
            human()

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        _print_table(header, rows, self.stdout)


async def _partners_add(db: Connection, partner: NewPartner, out: _Output) -> None:
    await add_partner(db, partner)
    out.line(f"added partner {partner.partner_id} ({partner.kind}, payout {partner.payout_model})")


async def _partners_list(db: Connection, _: None, out: _Output) -> None:
    partners = await list_partners(db)
    header = ("PARTNER", "KIND", "PAYOUT", "NAME", "IBAN", "CUSTOMERS")
    rows = [
        [p["partner_id"], p["kind"], p["payout_model"], p["name"], p["iban"], p["customers"]]
        for p in partners
    ]
    out.json_or(partners, lambda: out.table(header, rows))


async def _partners_show(db: Connection, partner_id: str, out: _Output) -> None:
    partner = await get_partner(db, partner_id)
    out.json_or(partner, lambda: _print_fields(partner, out.stdout))


async def _customers_add(db: Connection, customer: NewCustomer, out: _Output) -> None:
    await add_customer(db, customer)
    out.line(
        f"added customer {customer.customer_id} (EAN {customer.ean}) of partner {customer.partner_id}"
    )


async def _customers_list(db: Connection, partner_id: str | None, out: _Output) -> None:
    customers = await list_customers(db, partner_id)
    header = ("CUSTOMER", "PARTNER", "NAME", "EAN", "POSTCODE", "GRID OPERATOR", "IBAN", "MANDATES")
    rows = [
        [
            c["customer_id"],
            c["partner_id"],
            c["name"],
            c["ean"],
            c["postcode"],
            c["grid_operator"],
            c["iban"],
            c["mandate_years"],
        ]
        for c in customers
    ]
    out.json_or(customers, lambda: out.table(header, rows))


async def _customers_show(db: Connection, customer_id: str, out: _Output) -> None:
    customer = await get_customer(db, customer_id)

    def human() -> None:
        _print_fields(
            {key: value for key, value in customer.items() if key not in ("mandates", "links")},
            out.stdout,
        )
        out.line("\nmandates:")
        out.table(_MANDATE_HEADER, [_mandate_row(mandate) for mandate in customer["mandates"]])
        out.line("\nchargers:")
        out.table(_LINK_HEADER, [_link_row(link) for link in customer["links"]])

    out.json_or(customer, human)


async def _mandates_add(db: Connection, mandate: NewMandate, out: _Output) -> None:
    customer_id = await add_mandate(db, mandate)
    out.line(
        f"added mandate for EAN {mandate.ean} {mandate.year} (customer {customer_id}), "
        f"valid {mandate.valid_from} to {mandate.valid_until}"
    )


async def _mandates_list(db: Connection, filters: dict[str, Any], out: _Output) -> None:
    mandates = await list_mandates(db, **filters)
    out.json_or(
        mandates,
        lambda: out.table(_MANDATE_HEADER, [_mandate_row(mandate) for mandate in mandates]),
    )


async def _links_add(db: Connection, link: NewLink, out: _Output) -> None:
    ean = await add_link(db, link)
    out.line(f"linked charger {link.identity} to customer {link.customer_id} (EAN {ean})")


async def _links_list(db: Connection, customer_id: str | None, out: _Output) -> None:
    links = await list_links(db, customer_id)
    out.json_or(links, lambda: out.table(_LINK_HEADER, [_link_row(link) for link in links]))


async def _links_remove(db: Connection, identity: str, out: _Output) -> None:
    customer_id = await remove_link(db, identity)
    out.line(f"unlinked charger {identity} from customer {customer_id}")


_ACTIONS: dict[tuple[str, str], Callable[[Connection, Any, _Output], Awaitable[None]]] = {
    ("partners", "add"): _partners_add,
    ("partners", "list"): _partners_list,
    ("partners", "show"): _partners_show,
    ("customers", "add"): _customers_add,
    ("customers", "list"): _customers_list,
    ("customers", "show"): _customers_show,
    ("mandates", "add"): _mandates_add,
    ("mandates", "list"): _mandates_list,
    ("links", "add"): _links_add,
    ("links", "list"): _links_list,
    ("links", "remove"): _links_remove,
}


async def ere_admin_command(
    config: Config,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one `ere-proxy partners|customers|mandates|links` action; returns the exit code.

    0 done; 2 bad input, a duplicate, an unknown record, or a constraint the database enforced;
    1 the database could not be reached or failed otherwise. Errors are one line on `stderr`.
    """
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        key = (args.ere_group, args.action)
        parsed = _PARSERS[key](args)
        async with open_database(config.database) as db:
            await _ACTIONS[key](db, parsed, _Output(stdout, getattr(args, "json", False)))
    except AdminInputError as error:
        return _fail(str(error), EXIT_INPUT, stderr)
    except REFUSED_BY_DATABASE as error:
        return _fail(violation_message(error), EXIT_INPUT, stderr)
    except DATABASE_ERRORS as error:  # includes StoreError (e.g. the database is unreachable)
        return _fail(
            f"database error: {type(error).__name__}: {one_line(str(error))}", EXIT_STORE, stderr
        )
    return EXIT_OK


def _fail(message: str, code: int, stderr: TextIO) -> int:
    print(f"ere-proxy: {one_line(message)}", file=stderr)
    return code
