"""The `statements` job of a payout run: one statement for every customer the run touched.

A customer's balance is touched by a run when the quarter stated lines for them, when the run
carried an amount of theirs over (still owed, or set off later), or when the run settled an
amount carried over from an earlier run. Each of them (with an e-mail address) gets a
statement: every line with its own figures (a correction names the quarter it corrects and the
sessions whose kWh changed, from `statement_sessions`), the fee rate and why (the line's
`active_referrals` once the closes record it, and the `referral_step` its close applied, kept in
`quarter_closes.rules`; `[ere] referral_step` for a close that kept none), the carry-overs, and
the fee as the invoice the payout job issued (`invoices`); in the customer's language, else
their partner's (`proxy.ere.core.statement_texts`). Statements already recorded in
`payout_statements` are not sent again when the job reruns; delivery itself is at least once
(see `proxy.ere.jobs.statement_delivery`).

`build_statement` reads one customer's statement of one quarter from the books; the job and the
partner API (`proxy.api.statement_data`) both use it. Before the quarter's payout run it gives
the statement as the close left it: nothing carried in or over, no invoice yet.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from proxy.ere.core.fee_invoice import FeeInvoice, Provider
from proxy.ere.core.quarters import Quarter, local_date
from proxy.ere.core.statement_mail import (
    FigureLine,
    PartnerBranding,
    PayoutStatement,
    PricingBasis,
    StatementLine,
    build_statement_message,
)
from proxy.ere.core.statement_texts import DEFAULT_LANGUAGE, ENGLISH, texts_for
from proxy.ere.jobs.queue import Job
from proxy.ere.jobs.statement_delivery import SmtpSettings, deliver_statements
from proxy.runtime.config import EreSettings
from proxy.store.connection import Connection

__all__ = ["CARRY_NOTES", "CustomerStatement", "build_statement", "send_statements", "statement_id"]

_ZERO = Decimal(0)
# The English notes by reason code; a statement says them in its own language.
CARRY_NOTES = ENGLISH.carry_notes

_TOUCHED = """
SELECT c.customer_id, c.email FROM customers c
WHERE c.customer_id IN (
    SELECT l.customer_id FROM statement_lines l
    JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision)
    WHERE l.quarter = $1 AND q.state = 'closed'
    UNION SELECT customer_id FROM payout_carry_overs WHERE run_id = $1 OR settled_by = $1)
ORDER BY c.customer_id
"""
_CUSTOMER = """
SELECT c.name, c.email, c.iban, c.partner_id, p.name, p.payout_model, p.branding,
       coalesce(c.language, p.language)
FROM customers c JOIN partners p USING (partner_id) WHERE c.customer_id = $1
"""
_LINES = """
SELECT l.ean, l.delivery_quarter, l.kind, l.kwh, l.ere, l.eur_per_ere, l.gross,
       l.fee_rate, l.fee, l.fee_vat, l.net, (to_jsonb(l) ->> 'active_referrals')::integer,
       q.rules ->> 'referral_step'
FROM statement_lines l JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision)
WHERE l.quarter = $1 AND l.customer_id = $2 AND q.state = 'closed'
ORDER BY l.ean, l.delivery_quarter, l.kind DESC
"""
_SESSIONS = """
SELECT s.ean, s.delivery_quarter, s.kind, s.session_id, coalesce(x.stopped_at, x.last_reading_at), s.kwh
FROM statement_sessions s JOIN quarter_closes q ON (q.quarter, q.revision) = (s.quarter, s.revision)
LEFT JOIN sessions x USING (session_id)
WHERE s.quarter = $1 AND s.customer_id = $2 AND q.state = 'closed' ORDER BY 5, 4
"""
_RUN = """
SELECT (SELECT row(amount, reason) FROM payout_carry_overs WHERE run_id = $1 AND customer_id = $2),
       (SELECT sum(amount) FROM payout_carry_overs WHERE settled_by = $1 AND customer_id = $2),
       (SELECT row(invoice_number, invoice_date, fee, vat) FROM invoices
        WHERE run_id = $1 AND customer_id = $2)
"""


@dataclass(frozen=True, slots=True)
class CustomerStatement:
    """One customer's statement of one quarter, the branding and `language` it is rendered
    with, and whose it is (`partner_id`); `carry_over_reason` is the run's reason code for an
    amount carried over."""

    statement: PayoutStatement
    branding: PartnerBranding
    partner_id: str
    carry_over_reason: str | None
    language: str = DEFAULT_LANGUAGE


def statement_id(quarter: str, customer_id: str) -> str:
    """The id of a customer's statement of a quarter: `2026Q3-<customer id>`."""
    return f"{quarter}-{customer_id}"


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
    messages, recipients = [], []
    for customer_id, email in await conn.fetch(_TOUCHED, quarter):
        if customer_id in done or not email:
            continue
        made = await build_statement(conn, quarter, customer_id, settings)
        if made is None:
            continue
        messages.append(
            build_statement_message(
                made.statement,
                made.branding,
                sender=settings.sender,
                dated=dated,
                language=made.language,
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


async def build_statement(
    conn: Connection, quarter: str, customer_id: str, settings: EreSettings
) -> CustomerStatement | None:
    """The statement of `customer_id` for `quarter` (see the module docstring), or None when
    the quarter is not closed or neither stated lines for the customer nor carried an amount of
    theirs (in or over) in its payout run. `settings` name the provider on the invoice and the
    referral step of closes that kept none."""
    customer = await conn.fetchrow(_CUSTOMER, customer_id)
    if customer is None:
        return None
    name, email, iban, partner_id, partner_name, model, branding, language = customer
    texts = texts_for(language)
    figures, sessions = await _lines_and_sessions(
        conn, quarter, customer_id, Decimal(settings.referral_step)
    )
    carried, carried_in, invoiced = await conn.fetchrow(_RUN, quarter, customer_id)
    if not figures and carried is None and carried_in is None:
        return None
    carried_over, reason = carried if carried is not None else (_ZERO, None)
    invoice = None
    if invoiced is not None:
        number, invoice_date, fee, vat = invoiced
        invoice = FeeInvoice(number, invoice_date, _provider(settings), fee, vat)
    paid_to = (
        partner_name if model == "partner-account" else (f"IBAN …{iban[-4:]}" if iban else None)
    )
    statement = PayoutStatement(
        statement_id(quarter, customer_id),
        name,
        email or "",
        texts.period_of(Quarter.parse(quarter)),
        tuple(sessions),
        sum((f.ere for f, _ in figures), _ZERO),
        None,
        PricingBasis.PER_ERE,
        sum((f.gross for f, _ in figures), _ZERO),
        sum((f.fee for f, _ in figures), _ZERO),
        # The VAT of the invoice when there is one (that of the total fee), so the summary
        # and the invoice never disagree by a rounding cent.
        invoice.vat if invoice else sum((vat for _, vat in figures), _ZERO),
        sum((f.net for f, _ in figures), _ZERO),
        carried_in=carried_in or _ZERO,
        carried_over=carried_over,
        paid_to=paid_to,
        carry_over_note=texts.carry_note(reason) if reason else None,
        lines=tuple(f for f, _ in figures),
        invoice=invoice,
    )
    return CustomerStatement(
        statement, PartnerBranding.from_stored(partner_name, branding), partner_id, reason, language
    )


async def _lines_and_sessions(
    conn: Connection, quarter: str, customer_id: str, referral_step: Decimal
) -> tuple[list[tuple[FigureLine, Decimal]], list[StatementLine]]:
    """The customer's lines (with the VAT in each fee) and the sessions of their regular lines;
    `referral_step` explains the rate of lines whose close kept no step of its own."""
    sessions: list[StatementLine] = []
    corrected: dict[tuple[str, str], list[tuple[int, Decimal]]] = defaultdict(list)
    for ean, delivered, kind, session_id, ended_at, kwh in await conn.fetch(
        _SESSIONS, quarter, customer_id
    ):
        if kind == "adjustment":
            corrected[ean, delivered].append((session_id, kwh))
        elif ended_at is not None:
            sessions.append(StatementLine(local_date(ended_at), kwh))
    lines: list[tuple[FigureLine, Decimal]] = []
    for row in await conn.fetch(_LINES, quarter, customer_id):
        ean, delivered, kind, kwh, ere, price, gross, rate, fee, vat, net, refs, step = row
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
            active_referrals=refs,
            referral_step=referral_step if step is None else Decimal(step),
            corrected=tuple(sorted(corrected[ean, delivered])) if correction else (),
        )
        lines.append((figures, vat))
    return lines, sessions


def _provider(settings: EreSettings) -> Provider:
    return Provider(
        settings.provider_name,
        settings.provider_address,
        settings.provider_kvk,
        settings.provider_vat_number,
    )


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
