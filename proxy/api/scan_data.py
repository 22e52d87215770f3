"""One partner's MID scans: running one over a portfolio, and reading the reports back.

`run` weighs each charger of the request with `proxy.ere.core.mid_scan.scan`: what the partner
declared, and what the proxy recorded of it, only if it is one of the partner's chargers
(`proxy.api.charger_data.PARTNER_CHARGERS`: registered by it, or linked to one of its customers
and not since to another partner's) and the proxy recorded an event of it. Any other identity,
another partner's charger included, gets what an identity nobody has seen gets: nothing of
another partner is read, so nothing of it can show. Of the partner's chargers the scan reads
the last boot's meter facts and the sessions of the window (`mid_scan.WINDOW_DAYS`, from when
the charger became the partner's or was first seen, if later), leaving out sessions that ended
while another partner's customer was linked. `assess` gives the verdicts a scan would give a
list of identities, storing nothing.

The report (scan, items, totals), the audit entry and the idempotent answer are written in one
transaction, so a request that fails or is cancelled leaves none of them; reports are never
changed afterwards (migration 019 refuses updates).

Errors: `Problem` (404 a scan that is not this partner's, 409 an Idempotency-Key reused, 422 a
charger's field that breaks the domain rules, named `chargers.<n>.<field>`); database errors
pass through (503 by the problem handlers).
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from proxy.api.audit import record_write
from proxy.api.charger_data import PARTNER_CHARGERS
from proxy.api.context import ApiContext
from proxy.api.cursors import encode_cursor
from proxy.api.idempotency import StoredAnswer, claim, remember
from proxy.api.key_store import Caller
from proxy.api.numbers import plain
from proxy.api.problems import Problem, field_error
from proxy.api.scan_models import ScanChargerIn, ScanIn, ScanOut
from proxy.api.session_data import END
from proxy.capture.evidence.ocmf import MAX_METER_TYPE_CHARS
from proxy.ere.admin.validation import AdminInputError, clean_text, validate_charger_identity
from proxy.ere.core.mid_scan import (
    WINDOW_DAYS,
    ChargerVerdict,
    Declared,
    Observed,
    Verdict,
    scan,
    total,
)
from proxy.store.connection import Connection

__all__ = ["ScanData", "new_scan_id"]

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SCAN_ID = re.compile(r"scn_[a-z0-9]{20}")
_TEXT_FIELDS = ("vendor", "model", "meter_type", "meter_serial", "firmware")
_MAX_TEXT = MAX_METER_TYPE_CHARS  # the longest meter type the MID list matches

# The partner's chargers among $2 that the proxy recorded, with where their window starts ($3:
# now, $4: the window's days) and what the window holds ($1: partner id).
_OBSERVED = f"""
WITH mine AS (
    SELECT m.identity FROM ({PARTNER_CHARGERS}) m WHERE m.identity = ANY($2::text[])
), spans AS (
    SELECT m.identity, greatest(
        $3::timestamptz - make_interval(days => $4),
        (SELECT min(e.received_at) FROM charger_events e WHERE e.identity = m.identity),
        least(
            (SELECT a.registered_at FROM api_chargers a
             WHERE a.identity = m.identity AND a.partner_id = $1),
            (SELECT min(l.valid_from) FROM charger_links l JOIN customers c USING (customer_id)
             WHERE l.identity = m.identity AND c.partner_id = $1)
        )
    ) AS since
    FROM mine m
    WHERE EXISTS (SELECT 1 FROM charger_events e WHERE e.identity = m.identity)
)
SELECT w.identity, w.since, b.meter_type, b.meter_serial, x.verified, x.unverified,
       coalesce(x.energy_wh, 0) AS energy_wh
FROM spans w
LEFT JOIN charger_boots b ON b.identity = w.identity
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE s.meter_class = 'signed-verified') AS verified,
           count(*) FILTER (WHERE s.meter_class = 'signed-unverified') AS unverified,
           sum(s.energy_wh) FILTER (WHERE s.status IN ('completed', 'orphaned') AND {END} IS NOT NULL)
               AS energy_wh
    FROM sessions s
    WHERE s.identity = w.identity AND s.status <> 'rejected' AND s.duplicate_of IS NULL
      AND coalesce({END}, s.started_at) >= w.since AND coalesce({END}, s.started_at) <= $3
      AND NOT EXISTS (
          SELECT 1 FROM charger_links l JOIN customers c USING (customer_id)
          WHERE l.identity = s.identity AND c.partner_id <> $1
            AND l.valid_from <= coalesce({END}, s.started_at)
            AND (l.valid_until IS NULL OR coalesce({END}, s.started_at) < l.valid_until)
      )
) x
"""
_INSERT_SCAN = """
INSERT INTO mid_scans (scan_id, partner_id, key_id, user_id, created_at, price_per_kwh, chargers,
    qualifies, needs_check, does_not_qualify, qualifies_kwh, needs_check_kwh,
    does_not_qualify_kwh, qualifies_eur, needs_check_eur, does_not_qualify_eur)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
"""
_INSERT_ITEMS = """
INSERT INTO mid_scan_items (scan_id, position, input, seen, verdict, reason_code, reason,
    kwh_basis, observed_kwh, observed_days, kwh_per_year, eur_per_year)
SELECT $1, i.position, i.input::jsonb, i.seen, i.verdict, i.reason_code, i.reason, i.kwh_basis,
       i.observed_kwh, i.observed_days, i.kwh_per_year, i.eur_per_year
FROM unnest($2::integer[], $3::text[], $4::boolean[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::numeric[], $10::integer[], $11::numeric[], $12::numeric[])
     AS i(position, input, seen, verdict, reason_code, reason, kwh_basis, observed_kwh,
          observed_days, kwh_per_year, eur_per_year)
"""
_SCANS = "SELECT * FROM mid_scans WHERE partner_id = $1"
_ITEMS = """
SELECT position, input::text AS input, seen, verdict, reason_code, reason, kwh_basis,
       observed_kwh, observed_days, kwh_per_year, eur_per_year
FROM mid_scan_items WHERE scan_id = $1 ORDER BY position
"""


def new_scan_id() -> str:
    """A fresh scan id: `scn_` and 20 random characters."""
    return "scn_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def _declared(position: int, item: ScanChargerIn) -> tuple[dict[str, Any], Declared]:
    """The charger as given (text cleaned) and what the scan takes of it; AdminInputError names
    the field as `chargers.<position>.<field>`."""
    where = f"chargers.{position}"
    given: dict[str, Any] = {"identity": None}
    if item.identity is not None:
        given["identity"] = validate_charger_identity(item.identity, f"{where}.identity")
    for name in _TEXT_FIELDS:
        value = getattr(item, name)
        given[name] = clean_text(value, f"{where}.{name}", max_chars=_MAX_TEXT, required=False)
    given["declared_kwh_per_year"] = item.declared_kwh_per_year
    kwh = None if item.declared_kwh_per_year is None else Decimal(item.declared_kwh_per_year)
    return given, Declared(given["identity"], given["meter_type"], given["meter_serial"], kwh)


def _boot_text(value: str | None) -> str | None:
    """A boot fact as the MID rules read it: blank is not given."""
    if value is None or not value.strip():
        return None
    return value.strip()


def _summary(row: Any) -> dict[str, Any]:
    totals: dict[str, Any] = {"chargers": row["chargers"]}
    for verdict in Verdict:
        totals[verdict.value] = {
            "chargers": row[verdict.value],
            "kwh_per_year": plain(row[f"{verdict.value}_kwh"]),
            "eur_per_year": plain(row[f"{verdict.value}_eur"]),
        }
    return {
        "id": row["scan_id"],
        "created_at": row["created_at"],
        "price_per_kwh": plain(row["price_per_kwh"]),
        "totals": totals,
    }


def _item(row: Any) -> dict[str, Any]:
    item = dict(row)
    item["input"] = json.loads(row["input"])
    for name in ("observed_kwh", "kwh_per_year", "eur_per_year"):
        item[name] = plain(row[name])
    return item


class ScanData:
    """The MID scans of one partner (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller, context: ApiContext) -> None:
        self._db, self.caller, self._context = db, caller, context

    @property
    def partner_id(self) -> str:
        return self.caller.partner_id

    async def run(self, body: ScanIn, idem_key: str, digest: str) -> StoredAnswer:
        """Scan the portfolio in `body`; the report (stored for `idem_key`)."""
        try:
            chargers = [_declared(n, item) for n, item in enumerate(body.chargers)]
        except AdminInputError as error:
            raise field_error(error, {}) from None
        identities = sorted({d.identity for _, d in chargers if d.identity is not None})
        price, mid_meters = self._context.scan_price_per_kwh, self._context.mid_meters
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            now: datetime = await tx.fetchval("SELECT now()")
            observed = await self._observed(tx, identities, now)
            verdicts = [
                scan(
                    declared,
                    None if declared.identity is None else observed.get(declared.identity),
                    as_of=now,
                    price_per_kwh=price,
                    mid_meters=mid_meters,
                )
                for _, declared in chargers
            ]
            totals = total(verdicts)
            scan_id = new_scan_id()
            by = [totals.by_verdict[v] for v in Verdict]
            await tx.execute(
                _INSERT_SCAN,
                scan_id,
                self.partner_id,
                self.caller.api_key_id,
                self.caller.user_id,
                now,
                price,
                totals.chargers,
                *(t.chargers for t in by),
                *(t.kwh_per_year for t in by),
                *(t.eur_per_year for t in by),
            )
            seen = [d.identity is not None and d.identity in observed for _, d in chargers]
            await tx.execute(
                _INSERT_ITEMS,
                scan_id,
                list(range(len(chargers))),
                [json.dumps(given) for given, _ in chargers],
                seen,
                [v.verdict.value for v in verdicts],
                [v.reason.value for v in verdicts],
                [v.text for v in verdicts],
                [v.kwh_basis.value for v in verdicts],
                [v.observed_kwh for v in verdicts],
                [v.observed_days for v in verdicts],
                [v.kwh_per_year for v in verdicts],
                [v.eur_per_year for v in verdicts],
            )
            report = await self._report(tx, scan_id)
            assert report is not None
            shown = ScanOut.model_validate(report).model_dump(mode="json")
            summary = {key: value for key, value in shown.items() if key != "items"}
            await record_write(tx, self.caller, "scan.run", "scan", scan_id, after=summary)
            answer = StoredAnswer(201, {"location": f"/v1/scans/{scan_id}"}, shown)
            await remember(tx, self.partner_id, idem_key, digest, answer)
        return answer

    async def assess(self, identities: list[str]) -> dict[str, ChargerVerdict]:
        """What a scan would answer for each of these identities, with nothing declared and
        nothing stored (the dashboard's portfolio overview)."""
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            now: datetime = await tx.fetchval("SELECT now()")
            observed = await self._observed(tx, sorted(set(identities)), now)
        price, mid_meters = self._context.scan_price_per_kwh, self._context.mid_meters
        return {
            identity: scan(
                Declared(identity),
                observed.get(identity),
                as_of=now,
                price_per_kwh=price,
                mid_meters=mid_meters,
            )
            for identity in identities
        }

    async def _observed(
        self, tx: Connection, identities: list[str], now: datetime
    ) -> dict[str, Observed]:
        if not identities:
            return {}
        rows = await tx.fetch(_OBSERVED, self.partner_id, identities, now, WINDOW_DAYS)
        return {
            row["identity"]: Observed(
                since=row["since"],
                meter_type=_boot_text(row["meter_type"]),
                meter_serial=_boot_text(row["meter_serial"]),
                verified_sessions=row["verified"],
                unverified_sessions=row["unverified"],
                energy_wh=row["energy_wh"],
            )
            for row in rows
        }

    async def _report(self, tx: Connection, scan_id: str) -> dict[str, Any] | None:
        row = await tx.fetchrow(f"{_SCANS} AND scan_id = $2", self.partner_id, scan_id)
        if row is None:
            return None
        items = [_item(item) for item in await tx.fetch(_ITEMS, scan_id)]
        return _summary(row) | {"items": items}

    async def get_scan(self, scan_id: str) -> dict[str, Any]:
        """One of this partner's scan reports; 404 for any other id."""
        if not _SCAN_ID.fullmatch(scan_id):
            raise Problem(404, "no such scan")
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            report = await self._report(tx, scan_id)
        if report is None:
            raise Problem(404, "no such scan")
        return report

    async def list_scans(
        self, before: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of this partner's scans, newest first (without their items), and the next
        page's cursor."""
        query = (
            f"{_SCANS} AND ($2::timestamptz IS NULL OR (created_at, scan_id) < ($2, $3)) "
            "ORDER BY created_at DESC, scan_id DESC LIMIT $4"
        )
        moment, scan_id = before if before is not None else (None, None)
        rows = await self._db.fetch(query, self.partner_id, moment, scan_id, limit + 1)
        scans = [_summary(row) for row in rows[:limit]]
        more = len(rows) > limit
        cursor = encode_cursor(scans[-1]["created_at"], scans[-1]["id"]) if more else None
        return scans, cursor
