"""One partner's statements and payouts: every query carries the caller's partner id.

When a statement exists: a customer of the partner has a statement of a quarter once that
quarter is closed and stated lines for them (a closed quarter is never rewritten, so its figures
are final), and also when the quarter's payout run carried an amount of theirs in or over
without lines. Until the quarter's payout run is made its payout is `pending`: nothing is
carried in or over yet and the fee has no invoice number; the statement's documents (HTML, PDF:
the statement the customer is sent) exist once the run made it. After the run the payout is
`paid` (in a transfer to the customer's account, or pooled to a partner-account partner),
`carried-over` (with the reason, and the later run that settled it) or `nothing-due` (a zero
balance). A statement is named `<quarter>-<customer id>`; the payout run of a quarter is
named by the quarter. Figures come from the same builder the statements job uses
(`proxy.ere.jobs.payout_statements.build_statement`); the provider on the invoices and the
remittance text come from the `[ere]` settings (`ApiContext.ere`), as the workers use them.
The rows read here become answers in `proxy.api.statement_views` (pure).

A payout run exists for a partner when it touched at least one of its customers. Lists are
newest quarter first, then by customer id.

Errors: `Problem` 404 for an id that is malformed or not this partner's (the same answer, so
nothing tells them apart); database errors pass through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proxy.api.key_store import Caller
from proxy.api.problems import Problem
from proxy.api.statement_views import (
    payout_item,
    payout_run,
    statement_body,
    statement_summary,
)
from proxy.ere.core.quarters import Quarter, QuarterFormatError
from proxy.ere.jobs.payout_statements import CustomerStatement, build_statement
from proxy.runtime.config import EreSettings
from proxy.store.connection import Connection

__all__ = ["StatementData", "StatementView", "parse_quarter", "parse_statement_id"]

_STATEMENT_ID = re.compile(r"([0-9]{4}Q[1-4])-([A-Za-z0-9][A-Za-z0-9._-]{0,63})", re.ASCII)

# Each (quarter, customer) of the partner's statements with its figures and payout, see the
# module docstring. $1 partner, $2 quarter, $3 customer (each NULL: any), $4/$5 the quarter
# and customer a page starts after, $6 the limit (NULL: none).
_ITEMS = """
WITH mine AS (
    SELECT customer_id, name, ean FROM customers
    WHERE partner_id = $1 AND ($3::text IS NULL OR customer_id = $3)
), stated AS (
    SELECT l.quarter, l.customer_id, sum(l.kwh) AS kwh, sum(l.ere) AS ere, sum(l.gross) AS gross,
           sum(l.fee) AS fee, sum(l.net) AS net
    FROM statement_lines l
    JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision) AND q.state = 'closed'
    WHERE l.customer_id IN (SELECT customer_id FROM mine) AND ($2::text IS NULL OR l.quarter = $2)
    GROUP BY l.quarter, l.customer_id
), keys AS (
    SELECT quarter, customer_id FROM stated
    UNION SELECT run_id, customer_id FROM payout_carry_overs
          WHERE customer_id IN (SELECT customer_id FROM mine) AND ($2::text IS NULL OR run_id = $2)
    UNION SELECT settled_by, customer_id FROM payout_carry_overs
          WHERE settled_by IS NOT NULL AND customer_id IN (SELECT customer_id FROM mine)
            AND ($2::text IS NULL OR settled_by = $2)
)
SELECT k.quarter, k.customer_id, m.name, m.ean,
       coalesce(s.kwh, 0) AS kwh, coalesce(s.ere, 0) AS ere, coalesce(s.gross, 0) AS gross,
       coalesce(s.fee, 0) AS fee, coalesce(s.net, 0) AS net,
       r.run_id IS NOT NULL AS run_made, r.execution_date, r.created_at AS run_at,
       (SELECT sum(i.amount) FROM payout_carry_overs i
        WHERE i.settled_by = k.quarter AND i.customer_id = k.customer_id) AS carried_in,
       o.amount AS carried_over, o.reason, o.settled_by,
       v.invoice_number, v.invoice_date, v.credit_note, v.fee_excl_vat, v.vat AS invoice_vat,
       v.fee AS invoice_fee,
       tc.amount AS own_amount, tc.end_to_end AS own_end_to_end,
       tp.amount AS pool_amount, tp.end_to_end AS pool_end_to_end
FROM keys k JOIN mine m USING (customer_id)
LEFT JOIN stated s USING (quarter, customer_id)
LEFT JOIN payout_runs r ON r.run_id = k.quarter
LEFT JOIN payout_carry_overs o ON o.run_id = k.quarter AND o.customer_id = k.customer_id
LEFT JOIN invoices v ON v.run_id = k.quarter AND v.customer_id = k.customer_id
LEFT JOIN payout_transfers tc
       ON tc.run_id = k.quarter AND tc.payee_kind = 'customer' AND tc.payee_id = k.customer_id
LEFT JOIN payout_transfers tp
       ON tp.run_id = k.quarter AND tp.payee_kind = 'partner' AND tp.payee_id = $1
WHERE $4::text IS NULL OR k.quarter < $4 OR (k.quarter = $4 AND k.customer_id > $5)
ORDER BY k.quarter DESC, k.customer_id
LIMIT $6
"""
_PARTNER = (
    "SELECT name, payout_model, iban, account_name, branding FROM partners WHERE partner_id = $1"
)


def parse_statement_id(text: str) -> tuple[str, str] | None:
    """(quarter, customer id) of a statement id, or None for anything else."""
    match = _STATEMENT_ID.fullmatch(text)
    if match is None or parse_quarter(match[1]) is None:
        return None
    return match[1], match[2]


def parse_quarter(text: str) -> str | None:
    """`text` if it is a quarter (`2026Q3`), else None."""
    try:
        return str(Quarter.parse(text))
    except QuarterFormatError:
        return None


@dataclass(frozen=True, slots=True)
class StatementView:
    """A statement as the API shows it (`body`), what renders it as a document (`made`), and
    when its payout run was made (None: pending, no documents yet)."""

    body: dict[str, Any]
    made: CustomerStatement
    run_at: datetime | None


class StatementData:
    """The statements and payouts of one partner (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller, settings: EreSettings) -> None:
        self._db, self.caller, self._settings = db, caller, settings

    @property
    def partner_id(self) -> str:
        return self.caller.partner_id

    async def _items(
        self,
        tx: Connection,
        quarter: str | None,
        customer: str | None,
        after: tuple[str, str] | None,
        limit: int | None,
    ) -> tuple[list[Any], Any]:
        rows = await tx.fetch(
            _ITEMS,
            self.partner_id,
            quarter,
            customer,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        partner = await tx.fetchrow(_PARTNER, self.partner_id)
        return rows, partner

    async def list_statements(
        self, quarter: str | None, customer: str | None, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of statement summaries, and the last one's id if more follow."""
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            rows, partner = await self._items(tx, quarter, customer, after, limit + 1)
        page = [statement_summary(self._settings, row, partner) for row in rows[:limit]]
        return page, page[-1]["id"] if len(rows) > limit else None

    async def list_payouts(
        self, quarter: str | None, customer: str | None, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of payouts, one per customer and quarter, and the last one's statement id if
        more follow."""
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            rows, partner = await self._items(tx, quarter, customer, after, limit + 1)
        page = [payout_item(self._settings, row, partner) for row in rows[:limit]]
        return page, page[-1]["statement_id"] if len(rows) > limit else None

    async def get_statement(self, text: str) -> StatementView:
        """One of this partner's statements; 404 for any other id."""
        parsed = parse_statement_id(text)
        if parsed is None:
            raise Problem(404, "no such statement")
        quarter, customer_id = parsed
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            rows, partner = await self._items(tx, quarter, customer_id, None, 1)
            made = await build_statement(tx, quarter, customer_id, self._settings) if rows else None
        if not rows or made is None or made.partner_id != self.partner_id:
            raise Problem(404, "no such statement")
        (row,) = rows
        return StatementView(
            statement_body(self._settings, row, partner, made),
            made,
            row["run_at"] if row["run_made"] else None,
        )

    async def get_payout_run(self, text: str) -> dict[str, Any]:
        """The payout run of a quarter as it concerns this partner; 404 if it touched none of
        its customers (or is not made yet, or `text` is no quarter)."""
        quarter = parse_quarter(text)
        if quarter is None:
            raise Problem(404, "no such payout run")
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            run = await tx.fetchrow(
                "SELECT execution_date, created_at FROM payout_runs WHERE run_id = $1", quarter
            )
            rows, partner = await self._items(tx, quarter, None, None, None)
        if run is None or not rows:
            raise Problem(404, "no such payout run")
        return payout_run(self._settings, quarter, run, rows, partner)
