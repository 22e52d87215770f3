"""Pushed CDRs in the database: stored once with the session they became, read back, listed.

`store_cdr` keeps a CDR and its session in one transaction, under a transaction-scoped advisory
lock on (partner, country code, party id, CDR id), so two pushes of one CDR run one after the
other. A CDR the partner has already is a replay: the same content (canonical JSON) changes
nothing and is answered as the first push was; other content is refused (CDRs are immutable:
a change is a credit CDR and a new CDR). A new CDR's session (`proxy.api.ocpi.cdr_sessions`) is
stored through `proxy.ingest.record_sessions`, the one way sessions from outside the proxy come
in, which weighs its meter evidence and finds duplicates; the CDR keeps the outcome and the
session. A CDR that makes no session that counts (a charger that is not the partner's, a rule
of the session records, a credit CDR, a reservation) is kept and accepted all the same, with a
note saying why: the CPO's platform has nothing to correct. A credit CDR is linked to the CDR
it credits. `get_cdr` and `list_cdrs` read a partner's CDRs as
received, oldest first.

Errors: `OcpiError` status 2001 for a changed CDR; database errors pass through.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from proxy.api.ocpi.cdr_sessions import Unmapped, cdr_session, refusal
from proxy.api.ocpi.cdrs import ReceivedCdr
from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.pages import Page
from proxy.api.ocpi.platforms import Platform
from proxy.api.ocpi.values import as_utc
from proxy.ingest.store import record_sessions
from proxy.store.connection import Connection

__all__ = ["StoredCdr", "get_cdr", "list_cdrs", "store_cdr"]

_BY_ID = (
    "partner_id = $1 AND upper(country_code) = upper($2) AND upper(party_id) = upper($3) "
    "AND upper(cdr_id) = upper($4)"
)


@dataclass(frozen=True)
class StoredCdr:
    """A CDR as kept: its ids as first received, whether this push made it, its session."""

    country_code: str
    party_id: str
    cdr_id: str
    created: bool
    session_id: int | None
    outcome: str
    note: str | None


async def store_cdr(db: Connection, platform: Platform, received: ReceivedCdr) -> StoredCdr:
    """Keep a pushed CDR (see the module docstring)."""
    cdr = received.cdr
    key = (cdr.country_code, cdr.party_id, cdr.id)
    async with db.transaction() as tx:
        await tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended("
            "'ocpi-cdr:' || $1 || ':' || upper($2) || ':' || upper($3) || ':' || upper($4), 0))",
            platform.partner_id,
            *key,
        )
        kept = await tx.fetchrow(
            "SELECT country_code, party_id, cdr_id, body_sha256, session_id, outcome, note "
            f"FROM ocpi_cdrs WHERE {_BY_ID}",
            platform.partner_id,
            *key,
        )
        if kept is not None:
            if kept["body_sha256"] != received.sha256:
                raise OcpiError(
                    Status.INVALID_PARAMETERS,
                    f"CDR {cdr.country_code}/{cdr.party_id}/{cdr.id} was received already with "
                    "other content; a CDR cannot change: send a credit CDR and a new CDR",
                )
            return StoredCdr(
                kept["country_code"],
                kept["party_id"],
                kept["cdr_id"],
                False,
                kept["session_id"],
                kept["outcome"],
                kept["note"],
            )
        credit_of = None
        if cdr.credit and cdr.credit_reference_id:
            credit_of = await tx.fetchval(
                f"SELECT cdr_ref FROM ocpi_cdrs WHERE {_BY_ID}",
                platform.partner_id,
                cdr.country_code,
                cdr.party_id,
                cdr.credit_reference_id,
            )
        mapped = cdr_session(cdr, platform.partner_id)
        if isinstance(mapped, Unmapped):
            session_id, outcome, notes = None, "unmapped", [mapped.reason]
        else:
            (item,) = (await record_sessions(tx, [mapped.session])).outcomes
            session_id, outcome, notes = item.session_id, item.outcome, list(mapped.notes)
            if item.error is not None:
                notes.insert(0, f"no session: {refusal(item.error)}")
            elif item.outcome == "duplicate":
                notes.insert(0, f"the same charging event as session {item.duplicate_of}")
            elif item.outcome == "conflict":  # the id's session is another's content
                session_id = None
                notes.insert(0, "a session of this id was supplied with other content")
        note = "; ".join(notes)[:2000] or None
        await tx.execute(
            "INSERT INTO ocpi_cdrs (partner_id, platform_id, country_code, party_id, cdr_id, "
            "body, body_sha256, last_updated, credit_of, session_id, outcome, note) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            platform.partner_id,
            platform.platform_id,
            *key,
            received.text,
            received.sha256,
            as_utc(cdr.last_updated),
            credit_of,
            session_id,
            outcome,
            note,
        )
    return StoredCdr(*key, True, session_id, outcome, note)


async def get_cdr(db: Connection, partner_id: str, key: tuple[str, str, str]) -> str | None:
    """The partner's CDR `key` (country code, party id, id), as received; None if unknown."""
    text: str | None = await db.fetchval(
        f"SELECT body FROM ocpi_cdrs WHERE {_BY_ID}", partner_id, *key
    )
    return text


async def list_cdrs(db: Connection, partner_id: str, page: Page) -> tuple[list[str], int]:
    """A page of the partner's CDRs as received, oldest first, and how many match in all."""
    where = (
        "partner_id = $1 AND ($2::timestamptz IS NULL OR last_updated >= $2) "
        "AND ($3::timestamptz IS NULL OR last_updated < $3)"
    )
    bounds: tuple[str, datetime | None, datetime | None] = (
        partner_id,
        page.date_from,
        page.date_to,
    )
    async with db.transaction(isolation="repeatable_read", readonly=True) as tx:
        total = await tx.fetchval(f"SELECT count(*) FROM ocpi_cdrs WHERE {where}", *bounds)
        rows = await tx.fetch(
            f"SELECT body FROM ocpi_cdrs WHERE {where} ORDER BY cdr_ref OFFSET $4 LIMIT $5",
            *bounds,
            page.offset,
            page.limit,
        )
    return [row["body"] for row in rows], int(total)
