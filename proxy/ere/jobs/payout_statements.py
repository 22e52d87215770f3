"""The `statements` job of a payout run: one statement for every customer the run touched.

A customer's balance is touched by a run when the quarter stated lines for them, when the run
carried an amount of theirs over (still owed, or set off later), or when the run settled an
amount carried over from an earlier run. Each of them (with an e-mail address) gets a
statement: every line with its own figures (a correction names the quarter it corrects and the
sessions whose kWh changed, from `statement_sessions`), the fee rate and why (the line's
`active_referrals` once the closes record it, and the `referral_step` its close applied, kept in
`quarter_closes.rules`; `[ere] referral_step` for a close that kept none), the carry-overs, and
the fee as the invoice the payout job issued (`invoices`). Statements already recorded in
`payout_statements` are not sent again when the job reruns; delivery itself is at least once
(see `proxy.ere.jobs.statement_delivery`).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from proxy.ere.core.fee_invoice import FeeInvoice, Provider
from proxy.ere.core.quarters import Quarter, local_date
from proxy.ere.core.statement_mail import (
    FigureLine,
    PartnerBranding,
    PayoutStatement,
    PricingBasis,
    StatementLine,
    build_statement_message,
    fee_rate_text,
)
from proxy.ere.jobs.queue import Job
from proxy.ere.jobs.statement_delivery import SmtpSettings, deliver_statements
from proxy.runtime.config import EreSettings
from proxy.store.connection import Connection

__all__ = ["CARRY_NOTES", "send_statements"]

_ZERO = Decimal(0)
CARRY_NOTES = {
    "below-minimum": "below the minimum payout; it is paid with a later quarter",
    "not-positive": "a correction downwards; it is settled against later quarters",
    "no-account": "no bank account on file yet; it is paid once one is known",
}

_TOUCHED = """
SELECT c.customer_id, c.name, c.email, c.iban, p.name, p.payout_model, p.branding
FROM customers c JOIN partners p USING (partner_id)
WHERE c.customer_id IN (
    SELECT l.customer_id FROM statement_lines l
    JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision)
    WHERE l.quarter = $1 AND q.state = 'closed'
    UNION SELECT customer_id FROM payout_carry_overs WHERE run_id = $1 OR settled_by = $1)
ORDER BY c.customer_id
"""
_LINES = """
SELECT l.customer_id, l.ean, l.delivery_quarter, l.kind, l.kwh, l.ere, l.eur_per_ere, l.gross,
       l.fee_rate, l.fee, l.fee_vat, l.net, (to_jsonb(l) ->> 'active_referrals')::integer,
       q.rules ->> 'referral_step'
FROM statement_lines l JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision)
WHERE l.quarter = $1 AND q.state = 'closed'
ORDER BY l.customer_id, l.ean, l.delivery_quarter, l.kind DESC
"""
_SESSIONS = """
SELECT s.customer_id, s.ean, s.delivery_quarter, s.kind, s.session_id,
       coalesce(x.stopped_at, x.last_reading_at), s.kwh
FROM statement_sessions s JOIN quarter_closes q ON (q.quarter, q.revision) = (s.quarter, s.revision)
LEFT JOIN sessions x USING (session_id)
WHERE s.quarter = $1 AND q.state = 'closed' ORDER BY 1, 6, 5
"""


async def send_statements(conn: Connection, job: Job, settings: EreSettings) -> None:
    """`statements` job: one statement per touched customer not delivered yet."""
    quarter = job.args["quarter"]
    dated = datetime.fromisoformat(job.args["created_at"])
    done = {
        row[0]
        for row in await conn.fetch(
            "SELECT customer_id FROM payout_statements WHERE run_id = $1", quarter
        )
    }
    lines, sessions = await _lines_and_sessions(conn, quarter, Decimal(settings.referral_step))
    carried = {
        row[0]: (row[1], row[2])
        for row in await conn.fetch(
            "SELECT customer_id, amount, reason FROM payout_carry_overs WHERE run_id = $1", quarter
        )
    }
    carried_in = dict(
        await conn.fetch(
            "SELECT customer_id, sum(amount) FROM payout_carry_overs WHERE settled_by = $1 GROUP BY 1",
            quarter,
        )
    )
    invoices = await _invoices(conn, quarter, settings)
    messages, recipients = [], []
    for customer_id, name, email, iban, partner_name, model, branding in await conn.fetch(
        _TOUCHED, quarter
    ):
        if customer_id in done or not email:
            continue
        figures = lines.get(customer_id, [])
        carried_over, reason = carried.get(customer_id, (_ZERO, None))
        paid_to = (
            partner_name if model == "partner-account" else (f"IBAN …{iban[-4:]}" if iban else None)
        )
        invoice = invoices.get(customer_id)
        statement = PayoutStatement(
            f"{quarter}-{customer_id}",
            name,
            email,
            _period_label(Quarter.parse(quarter)),
            tuple(sessions.get(customer_id, ())),
            sum((f.ere for f, _ in figures), _ZERO),
            None,
            PricingBasis.PER_ERE,
            sum((f.gross for f, _ in figures), _ZERO),
            sum((f.fee for f, _ in figures), _ZERO),
            # The VAT of the invoice when there is one (that of the total fee), so the summary
            # and the invoice never disagree by a rounding cent.
            invoice.vat if invoice else sum((vat for _, vat in figures), _ZERO),
            sum((f.net for f, _ in figures), _ZERO),
            carried_in=carried_in.get(customer_id, _ZERO),
            carried_over=carried_over,
            paid_to=paid_to,
            carry_over_note=CARRY_NOTES.get(reason) if reason else None,
            lines=tuple(f for f, _ in figures),
            invoice=invoice,
        )
        messages.append(
            build_statement_message(
                statement, _branding(partner_name, branding), sender=settings.sender, dated=dated
            )
        )
        recipients.append(customer_id)
    if not messages:
        return
    deliveries = await deliver_statements(messages, _smtp(settings), Path(settings.statement_dir))
    for customer_id, delivery in zip(recipients, deliveries, strict=True):
        await conn.execute(
            "INSERT INTO payout_statements (run_id, customer_id, message_id, path) VALUES ($1, $2, $3, $4)",
            quarter,
            customer_id,
            delivery.message_id,
            str(delivery.path) if delivery.path else None,
        )


async def _lines_and_sessions(
    conn: Connection, quarter: str, referral_step: Decimal
) -> tuple[dict[str, list[tuple[FigureLine, Decimal]]], dict[str, list[StatementLine]]]:
    """Each customer's lines (with the VAT in each fee) and the sessions of their regular lines;
    `referral_step` explains the rate of lines whose close kept no step of its own."""
    sessions: dict[str, list[StatementLine]] = defaultdict(list)
    corrected: dict[tuple[str, str, str], list[tuple[int, Decimal]]] = defaultdict(list)
    for customer_id, ean, delivered, kind, session_id, ended_at, kwh in await conn.fetch(
        _SESSIONS, quarter
    ):
        if kind == "adjustment":
            corrected[customer_id, ean, delivered].append((session_id, kwh))
        elif ended_at is not None:
            sessions[customer_id].append(StatementLine(local_date(ended_at), kwh))
    lines: dict[str, list[tuple[FigureLine, Decimal]]] = defaultdict(list)
    for row in await conn.fetch(_LINES, quarter):
        (
            customer_id,
            ean,
            delivered,
            kind,
            kwh,
            ere,
            price,
            gross,
            rate,
            fee,
            vat,
            net,
            refs,
            step,
        ) = row
        correction = kind == "adjustment"
        figures = FigureLine(
            delivered,
            correction,
            kwh,
            ere,
            price,
            gross,
            rate,
            fee,
            net,
            fee_rate_shown=fee_rate_text(
                rate, refs, referral_step if step is None else Decimal(step)
            ),
            corrected=tuple(sorted(corrected[customer_id, ean, delivered])) if correction else (),
        )
        lines[customer_id].append((figures, vat))
    return lines, sessions


async def _invoices(conn: Connection, quarter: str, settings: EreSettings) -> dict[str, FeeInvoice]:
    provider = Provider(
        settings.provider_name,
        settings.provider_address,
        settings.provider_kvk,
        settings.provider_vat_number,
    )
    return {
        customer_id: FeeInvoice(number, invoice_date, provider, fee, vat)
        for customer_id, number, invoice_date, fee, vat in await conn.fetch(
            "SELECT customer_id, invoice_number, invoice_date, fee, vat FROM invoices WHERE run_id = $1",
            quarter,
        )
    }


def _period_label(quarter: Quarter) -> str:
    return f"{quarter} ({quarter.first_day:%d %B %Y} – {quarter.last_day:%d %B %Y})"


def _branding(partner_name: str, stored: Any) -> PartnerBranding:
    fields = json.loads(stored) if isinstance(stored, str) else dict(stored or {})
    return PartnerBranding(fields.pop("display_name", partner_name), **fields)


def _smtp(settings: EreSettings) -> SmtpSettings | None:
    if not settings.smtp_host:
        return None
    return SmtpSettings(
        settings.smtp_host,
        settings.smtp_port,
        starttls=settings.smtp_starttls,
        username=settings.smtp_username or None,
        password=os.environ.get(settings.smtp_password_env) or None,
    )
