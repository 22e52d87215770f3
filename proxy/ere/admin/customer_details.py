"""Changing a customer's details: name, e-mail, address, postcode, city, IBAN and the language
of their statements, with history.

Details change in place (statements and payouts use the current ones) and every change is kept
in `customer_changes`: the fields changed, before and after, who (`actor`), how (`channel`),
when (the database's clock). The EAN and the partner are not details: a new grid connection is
a new enrolment, and the database refuses to change either (migration 021).

`checked_details` validates the fields to change, sans-IO, by the rules enrolment applies
(`proxy.ere.admin.validation`): names and address as plain text, a Dutch postcode, an e-mail
address, an IBAN in the SEPA zone, `nl` or `en`. Only the IBAN and the language may be removed
(None): the IBAN only for a customer of a `partner-account` partner (a `direct` partner's
customers are paid to their own account); without a language of their own, a customer's
statements are in their partner's.
`update_customer` writes the fields that differ from what is stored, in one transaction with the
customer's row locked, and returns them before and after (empty when nothing differs: then
nothing is written). An IBAN changed after a quarter was closed is paid from the next payout run
on; closed statements name no account, and a written payout file keeps the one it paid.

Errors: `AdminInputError` naming the field (`--name`, `--iban`...) or the customer; the tables are
left as they were.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from proxy.ere.admin.changes import validate_channel
from proxy.ere.admin.new_records import statement_language
from proxy.ere.admin.validation import (
    AdminInputError,
    clean_text,
    normalise_email,
    normalise_iban,
    normalise_postcode,
    required,
    shown,
)
from proxy.store.connection import Connection

__all__ = ["DETAILS", "checked_details", "update_customer"]


def _text(field: str, max_chars: int) -> Callable[[str | None], str | None]:
    return lambda value: required(clean_text(value, field, max_chars=max_chars))


def _needs(check: Callable[[str, str], str], field: str) -> Callable[[str | None], str | None]:
    def checked(value: str | None) -> str | None:
        if value is None:
            raise AdminInputError(f"{field}: is required; it cannot be removed")
        return check(value, field)

    return checked


def _iban(value: str | None) -> str | None:
    return None if value is None else normalise_iban(value, "--iban")


def _language(value: str | None) -> str | None:
    return None if value is None else statement_language(value)


# The details a change may name (each a `customers` column), and how each is checked.
DETAILS: dict[str, Callable[[str | None], str | None]] = {
    "name": _text("--name", 200),
    "email": _needs(normalise_email, "--email"),
    "address": _text("--address", 200),
    "postcode": _needs(normalise_postcode, "--postcode"),
    "city": _text("--city", 100),
    "iban": _iban,
    "language": _language,  # None: the partner's language
}


def checked_details(fields: Mapping[str, str | None]) -> dict[str, str | None]:
    """The fields to change in their stored form (AdminInputError names the first bad one)."""
    changes = {}
    for name, value in fields.items():
        check = DETAILS.get(name)
        if check is None:
            raise AdminInputError(
                f"--{name.replace('_', '-')}: {shown(name)} is not a detail that can change; "
                f"change {', '.join(DETAILS)}"
            )
        changes[name] = check(value)
    return changes


async def update_customer(
    conn: Connection,
    customer_id: str,
    changes: Mapping[str, str | None],
    *,
    channel: str,
    actor: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write `changes` (from `checked_details`) to the customer's row and its history; returns
    (before, after) of the fields that differ (see the module docstring)."""
    channel = validate_channel(channel)
    unknown = sorted(set(changes) - set(DETAILS))
    if unknown:  # column names reach SQL only from DETAILS
        raise AdminInputError(f"--{unknown[0]}: is not a detail that can change")
    async with conn.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT c.name, c.email, c.address, c.postcode, c.city, c.iban, c.language, "
            "p.payout_model "
            "FROM customers c JOIN partners p USING (partner_id) WHERE c.customer_id = $1 "
            "FOR UPDATE OF c",
            customer_id,
        )
        if row is None:
            raise AdminInputError(f"customer id: no customer {customer_id!r}")
        after = {name: value for name, value in changes.items() if row[name] != value}
        if "iban" in after and after["iban"] is None and row["payout_model"] == "direct":
            raise AdminInputError(
                "--iban: is required: the customer's partner pays its customers directly "
                "(payout model direct), so it cannot be removed"
            )
        if not after:
            return {}, {}
        before = {name: row[name] for name in after}
        columns = list(after)
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(columns, start=2))
        await tx.execute(
            f"UPDATE customers SET {assignments} WHERE customer_id = $1",
            customer_id,
            *(after[name] for name in columns),
        )
        await tx.execute(
            "INSERT INTO customer_changes (customer_id, channel, actor, before, after) "
            "VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)",
            customer_id,
            channel,
            actor,
            _json(before),
            _json(after),
        )
    return before, after


def _json(values: Mapping[str, str | None]) -> str:
    return json.dumps(dict(values), sort_keys=True)
