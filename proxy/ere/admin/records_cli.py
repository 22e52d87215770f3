"""`ere-proxy partners|customers|mandates|links|referrals`: the ERE domain records, from the shell.

Until partners enrol customers over the API, operators keep these tables with the commands below:

* `partners add|list|show`: CPOs, installers and energy suppliers, their payout model (`direct`:
  each customer is paid to their own IBAN; `partner-account`: one transfer to the partner's
  IBAN), the branding of their white-label statements and their language (`--language nl|en`,
  Dutch by default); `partners brand`: change that branding and language
  (`proxy.ere.admin.branding_cli`); `partners keys create|list|rotate|revoke`: their partner API
  keys (`proxy.ere.admin.api_keys_cli`); `partners chargers grant|revoke|list`: chargers that
  connect already, given to a partner for its API (`proxy.ere.admin.charger_grants_cli`);
  `partners users add|list|remove`: the people who log in to its dashboard
  (`proxy.api.dashboard.users_cli`);
  `partners ocpi create|list|revoke`: a partner's OCPI platform and its token A
  (`proxy.ere.admin.ocpi_cli`).
* `customers add|list|show`: the holder of one grid connection (EAN), where they are paid, their
  referral code and the code they were referred with (`--referral-code`), and the language of
  their statements (`--language nl|en`; default: their partner's).
* `mandates add|list|show|revoke`: the machtiging per EAN per calendar year, with its consent
  record and evidence (`--consent-text-version`, `--document FILE` hashed, `--actor`), revoked
  once with a reason; never deleted.
* `links add|end|move|list`: which customer's connection a charger charges on, as periods:
  `move` ends the open period and opens the next at one instant, `end` closes it with a reason;
  `list` shows current periods (`--all`: every period) with the charger's meter evidence.
  `remove` is `end` by another name and needs `--reason` too.
* `referrals record|show`: refer a customer once with a customer's or partner's code (`--actor`;
  never closing a cycle of referrals); show an owner's code and whom it referred, with when
  (the database's clock) and by whom each referral was recorded.

Every input is checked before anything is written (`proxy.ere.admin.validation`,
`proxy.ere.admin.changes`), and every command writes in one transaction, so bad input leaves the
tables as they were. `list` and `show` print a table or fields, or JSON with `--json`
(`proxy.ere.admin.records_output`).

Errors: bad input, duplicates and unknown records print one line `ere-proxy: <field>: <what is
wrong>` and exit 2; a constraint violation that slips past these checks (a concurrent writer)
becomes the same kind of message and exit code. A database that cannot be reached or fails
otherwise exits 1. Exit 0 means done.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from proxy.api.dashboard.users_cli import add_user_parsers, users_command
from proxy.ere.admin.api_keys_cli import add_api_key_parsers, api_keys_command
from proxy.ere.admin.branding_cli import add_branding_parser, brand_partner
from proxy.ere.admin.changes import (
    LinkEnd,
    LinkMove,
    MandateRevocation,
    ReferralRecord,
    hash_document,
    validate_actor,
)
from proxy.ere.admin.charger_grants_cli import add_charger_grant_parsers, charger_grants_command
from proxy.ere.admin.cli_exit import exit_code
from proxy.ere.admin.link_periods import add_link, end_link, list_links, move_link
from proxy.ere.admin.new_records import NewCustomer, NewLink, NewMandate, NewPartner
from proxy.ere.admin.ocpi_cli import add_ocpi_parsers, ocpi_command
from proxy.ere.admin.partner_branding import BrandingChange
from proxy.ere.admin.records import (
    add_customer,
    add_mandate,
    add_partner,
    get_customer,
    get_partner,
    list_customers,
    list_mandates,
    list_partners,
    revoke_mandate,
)
from proxy.ere.admin.records_output import (
    LINK_HEADER,
    MANDATE_HEADER,
    Output,
    link_row,
    mandate_row,
)
from proxy.ere.admin.referrals import record_referral, referral_summary
from proxy.ere.admin.validation import (
    CONSENT_METHODS,
    PARTNER_KINDS,
    PAYOUT_MODELS,
    AdminInputError,
    normalise_ean,
    parse_year,
    validate_id,
)
from proxy.runtime.config import Config
from proxy.store.connection import Connection
from proxy.store.db import open_database

__all__ = ["add_ere_admin_parsers", "ere_admin_command"]

CLI = "cli"  # the channel of everything recorded with these commands
_ACTOR_HELP = "who records this (default: the OS user name)"


def _choices(allowed: Sequence[str]) -> str:
    return "{" + ",".join(allowed) + "}"


def _group(sub: Any, name: str, help_text: str) -> Any:
    parser = sub.add_parser(name, help=help_text)
    parser.set_defaults(ere_group=name)
    return parser.add_subparsers(dest="action", required=True)


def _add_partner_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(sub, "partners", "manage ERE partners (CPOs, installers, energy suppliers)")
    add = actions.add_parser("add", parents=[common], help="add a partner")
    add.add_argument("partner_id")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", required=True, metavar=_choices(PARTNER_KINDS))
    add.add_argument("--payout-model", required=True, metavar=_choices(PAYOUT_MODELS))
    add.add_argument("--iban", help="the partner's account (required for partner-account)")
    add.add_argument("--account-name", help="holder of that account (default: the partner's name)")
    add.add_argument("--display-name", help="name on statements (default: the partner's name)")
    add.add_argument("--colour", help="brand colour, #rrggbb")
    add.add_argument("--logo-url", help="https:// URL of the logo on statements")
    add.add_argument("--footer", help="footer text of statements (may span lines)")
    add.add_argument("--language", metavar="{nl,en}", help="language of statements (default nl)")
    actions.add_parser("list", parents=[common], help="list partners").add_argument(
        "--json", action="store_true"
    )
    show = actions.add_parser("show", parents=[common], help="show one partner")
    show.add_argument("partner_id")
    show.add_argument("--json", action="store_true")
    add_branding_parser(actions, common)
    add_api_key_parsers(actions, common)
    add_charger_grant_parsers(actions, common)
    add_user_parsers(actions, common)
    add_ocpi_parsers(actions, common)


def _add_customer_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(sub, "customers", "manage ERE customers (connection holders)")
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
    add.add_argument("--referral-code", help="the code the customer was referred with")
    add.add_argument(
        "--language", metavar="{nl,en}", help="language of statements (default: the partner's)"
    )
    listing = actions.add_parser("list", parents=[common], help="list customers")
    listing.add_argument("--partner", help="only this partner's customers")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser(
        "show", parents=[common], help="show one customer with mandates and link periods"
    )
    show.add_argument("customer_id")
    show.add_argument("--json", action="store_true")


def _add_mandate_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(sub, "mandates", "manage ERE mandates (one per EAN per calendar year)")
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
    add.add_argument("--consent-method", required=True, metavar=_choices(CONSENT_METHODS))
    add.add_argument("--consent-reference", help="document or record id of the consent")
    add.add_argument(
        "--consent-text-version", required=True, help="version of the text the customer agreed to"
    )
    add.add_argument("--document", help="the signed mandate (its SHA-256 is stored; max 20 MB)")
    add.add_argument("--actor", help=_ACTOR_HELP)
    listing = actions.add_parser("list", parents=[common], help="list mandates")
    listing.add_argument("--year")
    listing.add_argument("--customer")
    listing.add_argument("--ean")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", parents=[common], help="show one mandate with its evidence")
    show.add_argument("--ean", required=True)
    show.add_argument("--year", required=True)
    show.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a mandate (once)")
    revoke.add_argument("--ean", required=True)
    revoke.add_argument("--year", required=True)
    revoke.add_argument("--reason", required=True)
    revoke.add_argument("--effective", help="last day still covered (default: today)")
    revoke.add_argument("--document", help="the revocation (its SHA-256 is stored; max 20 MB)")
    revoke.add_argument("--reference", help="document or record id of the revocation")
    revoke.add_argument("--actor", help=_ACTOR_HELP)


def _add_link_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(sub, "links", "link chargers to customers' connections, as periods")
    add = actions.add_parser("add", parents=[common], help="link a charger to a customer")
    add.add_argument("identity", help="the charger's OCPP identity")
    add.add_argument("--customer", required=True)
    add.add_argument("--max-power-w", required=True, help="the charger's maximum power in watts")
    add.add_argument("--from", dest="valid_from", help="start, ISO 8601 with offset (default now)")
    add.add_argument("--actor", help=_ACTOR_HELP)
    for name, help_text in (("end", "end a charger's link period"), ("remove", "same as end")):
        end = actions.add_parser(name, parents=[common], help=help_text)
        end.add_argument("identity")
        end.add_argument("--reason", required=True)
        end.add_argument("--at", help="end, ISO 8601 with offset (default now)")
        end.add_argument("--actor", help=_ACTOR_HELP)
    move = actions.add_parser("move", parents=[common], help="move a charger to another customer")
    move.add_argument("identity")
    move.add_argument("--to-customer", required=True)
    move.add_argument("--reason", required=True)
    move.add_argument("--at", help="instant of the move, ISO 8601 with offset (default now)")
    move.add_argument("--max-power-w", help="maximum power from then on (default: unchanged)")
    move.add_argument("--actor", help=_ACTOR_HELP)
    listing = actions.add_parser(
        "list", parents=[common], help="list link periods with each charger's meter evidence"
    )
    listing.add_argument("--customer", help="only this customer's chargers")
    listing.add_argument("--all", action="store_true", help="ended periods too")
    listing.add_argument("--json", action="store_true")


def _add_referral_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(sub, "referrals", "referral codes of customers and partners")
    record = actions.add_parser("record", parents=[common], help="record who referred a customer")
    record.add_argument("customer_id")
    record.add_argument("--code", required=True)
    record.add_argument("--actor", help=_ACTOR_HELP)
    show = actions.add_parser("show", parents=[common], help="a code and whom it referred")
    show.add_argument("owner", metavar="CUSTOMER|PARTNER")
    show.add_argument("--json", action="store_true")


def add_ere_admin_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The record groups; `common` carries `--config`."""
    _add_partner_parsers(sub, common)
    _add_customer_parsers(sub, common)
    _add_mandate_parsers(sub, common)
    _add_link_parsers(sub, common)
    _add_referral_parsers(sub, common)


def _optional(value: str | None, check: Callable[[str, str], Any], field: str) -> Any:
    return None if value is None else check(value, field)


def _new_mandate(args: argparse.Namespace) -> tuple[NewMandate, str]:
    actor = validate_actor(args.actor)
    document = _optional(args.document, hash_document, "--document")
    return NewMandate.from_args(args, document_sha256=document), actor


def _with_actor(parse: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], Any]:
    return lambda args: (parse(args), validate_actor(args.actor))


# What each action makes of its arguments: all checks that need no database, run before a
# connection is opened, so bad input never reaches it.
_PARSERS: dict[tuple[str, str], Callable[[argparse.Namespace], Any]] = {
    ("partners", "add"): NewPartner.from_args,
    ("partners", "list"): lambda args: None,
    ("partners", "show"): lambda args: validate_id(args.partner_id, "partner id"),
    ("partners", "brand"): BrandingChange.from_args,
    ("customers", "add"): NewCustomer.from_args,
    ("customers", "list"): lambda args: _optional(args.partner, validate_id, "--partner"),
    ("customers", "show"): lambda args: validate_id(args.customer_id, "customer id"),
    ("mandates", "add"): _new_mandate,
    ("mandates", "list"): lambda args: {
        "year": _optional(args.year, parse_year, "--year"),
        "customer_id": _optional(args.customer, validate_id, "--customer"),
        "ean": _optional(args.ean, normalise_ean, "--ean"),
    },
    ("mandates", "show"): lambda args: {
        "year": parse_year(args.year),
        "ean": normalise_ean(args.ean),
    },
    ("mandates", "revoke"): _with_actor(MandateRevocation.from_args),
    ("links", "add"): _with_actor(NewLink.from_args),
    ("links", "end"): _with_actor(LinkEnd.from_args),
    ("links", "remove"): _with_actor(LinkEnd.from_args),
    ("links", "move"): _with_actor(LinkMove.from_args),
    ("links", "list"): lambda args: {
        "customer_id": _optional(args.customer, validate_id, "--customer"),
        "include_ended": args.all,
    },
    ("referrals", "record"): _with_actor(ReferralRecord.from_args),
    ("referrals", "show"): lambda args: validate_id(args.owner, "id"),
}


async def _partners_add(db: Connection, partner: NewPartner, out: Output) -> None:
    await add_partner(db, partner)
    out.line(f"added partner {partner.partner_id} ({partner.kind}, payout {partner.payout_model})")


async def _partners_list(db: Connection, _: None, out: Output) -> None:
    partners = await list_partners(db)
    header = ("PARTNER", "KIND", "PAYOUT", "NAME", "IBAN", "CUSTOMERS")
    rows = [
        [p["partner_id"], p["kind"], p["payout_model"], p["name"], p["iban"], p["customers"]]
        for p in partners
    ]
    out.json_or(partners, lambda: out.table(header, rows))


async def _partners_show(db: Connection, partner_id: str, out: Output) -> None:
    partner = await get_partner(db, partner_id)
    out.json_or(partner, lambda: out.fields(partner))


async def _customers_add(db: Connection, customer: NewCustomer, out: Output) -> None:
    code = await add_customer(db, customer, actor=validate_actor(None))
    referred = "" if customer.referral_code is None else f", referred with {customer.referral_code}"
    out.line(
        f"added customer {customer.customer_id} (EAN {customer.ean}) of partner {customer.partner_id}, "
        f"referral code {code}{referred}"
    )


async def _customers_list(db: Connection, partner_id: str | None, out: Output) -> None:
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


async def _customers_show(db: Connection, customer_id: str, out: Output) -> None:
    customer = await get_customer(db, customer_id)

    def human() -> None:
        out.fields(
            {key: value for key, value in customer.items() if key not in ("mandates", "links")}
        )
        out.line("\nmandates:")
        out.table(MANDATE_HEADER, [mandate_row(mandate) for mandate in customer["mandates"]])
        for mandate in customer["mandates"]:
            if mandate["revocation"] is not None:
                out.line(f"\nrevocation of the {mandate['year']} mandate:")
                out.fields(mandate["revocation"] | {"revoked_at": mandate["revoked_at"]}, "  ")
        out.line("\nchargers:")
        out.table(LINK_HEADER, [link_row(link) for link in customer["links"]])

    out.json_or(customer, human)


async def _mandates_add(db: Connection, parsed: tuple[NewMandate, str], out: Output) -> None:
    mandate, actor = parsed
    customer_id = await add_mandate(db, mandate, channel=CLI, actor=actor)
    out.line(
        f"added mandate for EAN {mandate.ean} {mandate.year} (customer {customer_id}), "
        f"valid {mandate.valid_from} to {mandate.valid_until}"
    )


async def _mandates_list(db: Connection, filters: dict[str, Any], out: Output) -> None:
    mandates = await list_mandates(db, **filters)
    out.json_or(
        mandates, lambda: out.table(MANDATE_HEADER, [mandate_row(mandate) for mandate in mandates])
    )


async def _mandates_show(db: Connection, key: dict[str, Any], out: Output) -> None:
    found = await list_mandates(db, **key)
    if not found:
        raise AdminInputError(f"--ean: EAN {key['ean']} has no mandate for {key['year']}")
    out.json_or(found[0], lambda: out.fields(found[0]))


async def _mandates_revoke(
    db: Connection, parsed: tuple[MandateRevocation, str], out: Output
) -> None:
    revocation, actor = parsed
    mandate = await revoke_mandate(db, revocation, channel=CLI, actor=actor)
    out.line(
        f"revoked mandate for EAN {mandate['ean']} {mandate['year']} (customer {mandate['customer_id']}): "
        f"covers up to {mandate['revoked_effective']}"
    )


async def _links_add(db: Connection, parsed: tuple[NewLink, str], out: Output) -> None:
    link, actor = parsed
    ean = await add_link(db, link, actor=actor)
    since = "" if link.valid_from is None else f" from {link.valid_from.isoformat()}"
    out.line(f"linked charger {link.identity} to customer {link.customer_id} (EAN {ean}){since}")


async def _links_end(db: Connection, parsed: tuple[LinkEnd, str], out: Output) -> None:
    change, actor = parsed
    customer_id, at = await end_link(db, change, actor=actor)
    out.line(
        f"ended link of charger {change.identity} to customer {customer_id} at {at.isoformat()}"
    )


async def _links_move(db: Connection, parsed: tuple[LinkMove, str], out: Output) -> None:
    move, actor = parsed
    previous, at = await move_link(db, move, actor=actor)
    out.line(
        f"moved charger {move.identity} from customer {previous} to customer {move.customer_id} "
        f"at {at.isoformat()}"
    )


async def _links_list(db: Connection, filters: dict[str, Any], out: Output) -> None:
    links = await list_links(db, **filters)
    out.json_or(links, lambda: out.table(LINK_HEADER, [link_row(link) for link in links]))


async def _referrals_record(
    db: Connection, parsed: tuple[ReferralRecord, str], out: Output
) -> None:
    referral, actor = parsed
    referrer = await record_referral(db, referral.customer_id, referral.code, actor)
    by = f"customer {referrer}" if referrer is not None else "a partner's code (no fee effect)"
    out.line(f"customer {referral.customer_id} was referred with {referral.code} by {by}")


async def _referrals_show(db: Connection, owner: str, out: Output) -> None:
    summary = await referral_summary(db, owner)

    def human() -> None:
        out.fields({key: value for key, value in summary.items() if key != "referred"})
        out.line("\nreferred customers:")
        out.table(
            ("CUSTOMER", "PARTNER", "SINCE", "REFERRAL RECORDED", "RECORDED BY"),
            [
                [
                    r["customer_id"],
                    r["partner_id"],
                    r["created_at"],
                    r["referred_at"],
                    r["referred_recorded_by"],
                ]
                for r in summary["referred"]
            ],
        )

    out.json_or(summary, human)


_ACTIONS: dict[tuple[str, str], Callable[[Connection, Any, Output], Awaitable[None]]] = {
    ("partners", "add"): _partners_add,
    ("partners", "list"): _partners_list,
    ("partners", "show"): _partners_show,
    ("partners", "brand"): brand_partner,
    ("customers", "add"): _customers_add,
    ("customers", "list"): _customers_list,
    ("customers", "show"): _customers_show,
    ("mandates", "add"): _mandates_add,
    ("mandates", "list"): _mandates_list,
    ("mandates", "show"): _mandates_show,
    ("mandates", "revoke"): _mandates_revoke,
    ("links", "add"): _links_add,
    ("links", "end"): _links_end,
    ("links", "remove"): _links_end,
    ("links", "move"): _links_move,
    ("links", "list"): _links_list,
    ("referrals", "record"): _referrals_record,
    ("referrals", "show"): _referrals_show,
}


async def ere_admin_command(
    config: Config,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one `ere-proxy partners|customers|mandates|links|referrals` action; returns the exit
    code.

    0 done; 2 bad input, a duplicate, an unknown record, or a constraint the database enforced;
    1 the database could not be reached or failed otherwise. Errors are one line on `stderr`.
    """
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if (args.ere_group, args.action) == ("partners", "keys"):
        return await api_keys_command(config, args, stdout, stderr)
    if (args.ere_group, args.action) == ("partners", "chargers"):
        return await charger_grants_command(config, args, stdout, stderr)
    if (args.ere_group, args.action) == ("partners", "users"):
        return await users_command(config, args, stdout, stderr)
    if (args.ere_group, args.action) == ("partners", "ocpi"):
        return await ocpi_command(config, args, stdout, stderr)

    async def act() -> None:
        key = (args.ere_group, args.action)
        parsed = _PARSERS[key](args)
        async with open_database(config.database) as db:
            await _ACTIONS[key](db, parsed, Output(stdout, getattr(args, "json", False)))

    return await exit_code(act(), stderr)
