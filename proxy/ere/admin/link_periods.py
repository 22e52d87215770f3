"""Which customer's connection a charger charged on, and when: link periods in `charger_links`.

A link is a period `[valid_from, valid_until)` (NULL: still linked) with who recorded it and, once
ended, when, by whom and why. A session belongs to the link whose period contains its end, so a
charger that moves to another customer keeps its past: `move_link` ends the open period and opens
the next one at the same instant, in one transaction. Nothing is deleted (the database refuses
it), periods of one charger never overlap (an exclusion constraint), and no change takes effect
inside a closed quarter (`proxy.ere.admin.closed_quarters`). `list_links` shows the current
periods (not ended, or ending later) or all, with the meter evidence capture has of the charger.

Errors: a refused change raises `AdminInputError` naming the option; the tables are left as they
were. A concurrent writer's overlapping period surfaces as the database's exclusion violation
(`charger_links_no_overlap`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from proxy.ere.admin.changes import LinkEnd, LinkMove
from proxy.ere.admin.closed_quarters import refuse_inside_closed_quarter
from proxy.ere.admin.new_records import NewLink
from proxy.ere.admin.validation import AdminInputError
from proxy.store.connection import Connection

__all__ = ["add_link", "end_link", "list_links", "move_link"]


async def _now(conn: Connection) -> datetime:
    now: datetime = await conn.fetchval("SELECT now()")
    return now


async def _customer_ean(conn: Connection, customer_id: str, field: str) -> str:
    ean: str | None = await conn.fetchval(
        "SELECT ean FROM customers WHERE customer_id = $1", customer_id
    )
    if ean is None:
        raise AdminInputError(
            f"{field}: no customer {customer_id!r}; add it with `customers add` first"
        )
    return ean


async def _open_period(conn: Connection, identity: str) -> Any:
    row = await conn.fetchrow(
        "SELECT link_id, customer_id, max_power_w, valid_from FROM charger_links "
        "WHERE identity = $1 AND valid_until IS NULL FOR UPDATE",
        identity,
    )
    if row is None:
        raise AdminInputError(
            f"identity: charger {identity!r} has no open link period; `links add` links it"
        )
    return row


async def _insert(conn: Connection, link: NewLink, valid_from: datetime, actor: str) -> None:
    await conn.execute(
        "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from, recorded_by) "
        "VALUES ($1, $2, $3, $4, $5)",
        link.identity,
        link.customer_id,
        link.max_power_w,
        valid_from,
        actor,
    )


async def _end(conn: Connection, open_period: Any, at: datetime, reason: str, actor: str) -> None:
    if at <= open_period["valid_from"]:
        raise AdminInputError(
            f"--at: {at.isoformat()} is not after the start of the open period, "
            f"{open_period['valid_from'].isoformat()}"
        )
    await refuse_inside_closed_quarter(conn, "--at", at)
    await conn.execute(
        "UPDATE charger_links SET valid_until = $2, ended_at = now(), ended_by = $3, end_reason = $4 "
        "WHERE link_id = $1",
        open_period["link_id"],
        at,
        actor,
        reason,
    )


async def add_link(conn: Connection, link: NewLink, *, actor: str) -> str:
    """Open a period for a charger from `link.valid_from` (None: now); returns the customer's EAN.

    AdminInputError for an unknown customer, a start inside a closed quarter, or a charger with
    an open period or one that ends after that start (move or end it instead).
    """
    async with conn.transaction() as tx:
        ean = await _customer_ean(tx, link.customer_id, "--customer")
        valid_from = link.valid_from or await _now(tx)
        clash = await tx.fetchrow(
            "SELECT customer_id, valid_from, valid_until FROM charger_links "
            "WHERE identity = $1 AND (valid_until IS NULL OR valid_until > $2) ORDER BY valid_from LIMIT 1",
            link.identity,
            valid_from,
        )
        if clash is not None:
            until = (
                "open"
                if clash["valid_until"] is None
                else f"until {clash['valid_until'].isoformat()}"
            )
            raise AdminInputError(
                f"identity: charger {link.identity!r} is linked to customer {clash['customer_id']!r} "
                f"from {clash['valid_from'].isoformat()} ({until}); use `links move` or `links end`"
            )
        await refuse_inside_closed_quarter(tx, "--from", valid_from)
        await _insert(tx, link, valid_from, actor)
    return ean


async def end_link(conn: Connection, change: LinkEnd, *, actor: str) -> tuple[str, datetime]:
    """End a charger's open period at `change.at` (None: now); returns (customer, end).

    AdminInputError if the charger has no open period, or the end is not after its start or lies
    inside a closed quarter. The row stays, with who ended it, when and why.
    """
    async with conn.transaction() as tx:
        open_period = await _open_period(tx, change.identity)
        at = change.at or await _now(tx)
        await _end(tx, open_period, at, change.reason, actor)
    return open_period["customer_id"], at


async def move_link(conn: Connection, move: LinkMove, *, actor: str) -> tuple[str, datetime]:
    """End the open period at `move.at` (None: now) and open one for `move.customer_id` there.

    Returns (previous customer, instant). AdminInputError as for `end_link`, for an unknown
    customer, and for a move that changes nothing (same customer and power).
    """
    async with conn.transaction() as tx:
        await _customer_ean(tx, move.customer_id, "--to-customer")
        open_period = await _open_period(tx, move.identity)
        power = move.max_power_w or open_period["max_power_w"]
        if open_period["customer_id"] == move.customer_id and power == open_period["max_power_w"]:
            raise AdminInputError(
                f"--to-customer: charger {move.identity!r} is linked to {move.customer_id!r} already "
                "with that power; nothing to move"
            )
        at = move.at or await _now(tx)
        await _end(tx, open_period, at, move.reason, actor)
        await _insert(tx, NewLink(move.identity, move.customer_id, power), at, actor)
    return open_period["customer_id"], at


_LINKS = """
SELECT l.link_id, l.identity, l.customer_id, c.ean, l.max_power_w, l.valid_from, l.valid_until, l.recorded_at,
       l.recorded_by, l.ended_at, l.ended_by, l.end_reason,
       b.meter_class, b.meter_type, b.meter_serial, b.vendor, b.model, b.booted_at
FROM charger_links l JOIN customers c USING (customer_id) LEFT JOIN charger_boots b USING (identity)
"""
_SHOWN = (
    "link_id",
    "identity",
    "customer_id",
    "ean",
    "max_power_w",
    "valid_from",
    "valid_until",
    "recorded_at",
    "recorded_by",
    "ended_at",
    "ended_by",
    "end_reason",
    "meter_class",
)
_BOOT = ("booted_at", "vendor", "model", "meter_type", "meter_serial")


def _link(row: Any) -> dict[str, Any]:
    boot = None if row["booted_at"] is None else {key: row[key] for key in _BOOT}
    return {key: row[key] for key in _SHOWN} | {"last_boot": boot}


async def list_links(
    conn: Connection, customer_id: str | None = None, *, include_ended: bool = False
) -> list[dict[str, Any]]:
    """Link periods (of one customer, or all), current ones only unless `include_ended`."""
    rows = await conn.fetch(
        _LINKS + " WHERE ($1::text IS NULL OR l.customer_id = $1) "
        "AND ($2 OR l.valid_until IS NULL OR l.valid_until > now()) "
        "ORDER BY l.identity, l.valid_from",
        customer_id,
        include_ended,
    )
    return [_link(row) for row in rows]
