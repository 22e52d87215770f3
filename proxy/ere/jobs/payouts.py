"""Paying a closed quarter out: the payout run (one pain.001 file) and the customers' statements.

`ere-proxy payout run 2026Q3` queues a `payout` job with the run's dates fixed at that moment.
Its handler sums each customer's net over the quarter's statement lines (regular and
adjustment), adds what the customer carried in from earlier runs, plans the transfers
(`core.payout_plan.plan_payouts`: one per direct customer, one per partner-account partner;
amounts below `payout_minimum`, not positive, or without an account carry over), builds and
validates the pain.001 document (`core.sepa`), writes it whole to
`<payout_dir>/payout-<quarter>.xml` (`write_sepa`), and records the run, its transfers and
carry-overs in the job's transaction. The run id is the quarter: the primary keys allow one run
per quarter and one transfer per payee in it. A worker killed half-way leaves no rows, and the
rerun writes the same bytes again (identifiers and dates are deterministic), so there is only
ever one file and one transfer per payee.

A `statements` job then renders each paid or carried customer's statement (partner-branded text
and HTML) and sends it over SMTP, or writes .eml files to `statement_dir`
(`proxy.ere.jobs.statement_delivery`); deliveries are recorded in `payout_statements`. A
statement is delivered at least once: a worker killed while sending may send some again when
the job reruns (mail has no transactions).

Blocking work leaves the event loop: the payout file is validated and written, and the
statements are sent or written, in a worker thread (`trio.to_thread.run_sync`), so the worker's
other tasks (its /metrics, its signal handling) run on meanwhile. Cancellation: the file write is
not abandoned; a cancel that arrives during it waits until the file is whole in place (or, if
writing failed, absent with any earlier file kept), then the job's transaction rolls back, so no
run refers to the file and the rerun writes the same bytes again. A cancel during delivery stops
it after the message under way (see `statement_delivery`); nothing is recorded, so the rerun
sends again.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from proxy.ere.core.payout_plan import CustomerBalance, PartnerPayout, PayoutModel, plan_payouts
from proxy.ere.core.quarters import Quarter, local_date
from proxy.ere.core.sepa import (
    BankAccount,
    Debtor,
    SepaDocument,
    build_credit_transfer,
    validate_pain001,
)
from proxy.ere.core.statement_mail import (
    PartnerBranding,
    PayoutStatement,
    PricingBasis,
    build_statement_message,
)
from proxy.ere.core.statement_mail import StatementLine as SessionLine
from proxy.ere.jobs.files import write_atomically
from proxy.ere.jobs.queue import Job, enqueue
from proxy.ere.jobs.statement_delivery import SmtpSettings, deliver_statements
from proxy.runtime.config import EreSettings
from proxy.store.connection import Connection


class PayoutRefused(ValueError):
    """A payout run the rules forbid (quarter not closed, already paid, no debtor account)."""


async def request_payout(
    conn: Connection, quarter: Quarter, settings: EreSettings, now: datetime
) -> bool:
    """Queue the payout run of a closed quarter; False if it was queued before."""
    state = await conn.fetchval(
        "SELECT state FROM quarter_closes WHERE quarter = $1 AND state <> 'reopened'", str(quarter)
    )
    if state != "closed":
        raise PayoutRefused(f"{quarter} is not closed" + (f" (it is {state})" if state else ""))
    if not (settings.debtor_name and settings.debtor_iban and settings.debtor_bic):
        raise PayoutRefused("set ere.debtor_name, ere.debtor_iban and ere.debtor_bic to pay out")
    args = {
        "quarter": str(quarter),
        "created_at": now.isoformat(),
        "execution_date": now.date().isoformat(),
    }
    return await enqueue(conn, "payout", str(quarter), args)


_BALANCES = """
SELECT c.customer_id, c.partner_id, c.name, c.iban, coalesce(l.net, 0), coalesce(k.carried, 0)
FROM customers c
LEFT JOIN (
    SELECT customer_id, sum(net) AS net FROM statement_lines sl
    JOIN quarter_closes q ON (q.quarter, q.revision) = (sl.quarter, sl.revision)
    WHERE sl.quarter = $1 AND q.state = 'closed' GROUP BY customer_id
) l USING (customer_id)
LEFT JOIN (
    SELECT customer_id, sum(amount) AS carried FROM payout_carry_overs WHERE settled_by IS NULL GROUP BY customer_id
) k USING (customer_id)
WHERE l.net IS NOT NULL OR k.carried IS NOT NULL
"""


async def run_payout(conn: Connection, job: Job, settings: EreSettings) -> None:
    """`payout` job: plan, write the file, record the run (see the module docstring)."""
    quarter = job.args["quarter"]
    revision = await conn.fetchval(
        "SELECT revision FROM quarter_closes WHERE quarter = $1 AND state = 'closed'", quarter
    )
    if revision is None:
        raise PayoutRefused(f"{quarter} is not closed")
    rows = await conn.fetch(_BALANCES, quarter)
    balances = [
        CustomerBalance(
            customer_id, partner_id, net, carried, BankAccount(name, iban) if iban else None
        )
        for customer_id, partner_id, name, iban, net, carried in rows
    ]
    partners = {
        partner_id: PartnerPayout(
            partner_id,
            PayoutModel(model),
            BankAccount(account_name or name, iban) if iban else None,
        )
        for partner_id, name, model, iban, account_name in await conn.fetch(
            "SELECT partner_id, name, payout_model, iban, account_name FROM partners"
        )
    }
    remittance = settings.remittance.format(quarter=quarter)
    plan = plan_payouts(
        balances,
        partners,
        minimum=Decimal(settings.payout_minimum),
        payout_run_id=quarter,
        remittance=remittance,
    )
    file_name = message_id = control_sum = None
    if plan.transfers:
        document = build_credit_transfer(
            Debtor(settings.debtor_name, settings.debtor_iban, settings.debtor_bic),
            [planned.transfer for planned in plan.transfers],
            execution_date=date.fromisoformat(job.args["execution_date"]),
            created_at=datetime.fromisoformat(job.args["created_at"]),
            payout_run_id=quarter,
        )
        file_name = f"payout-{quarter}.xml"
        await trio.to_thread.run_sync(
            _write_payout_file, Path(settings.payout_dir), file_name, document
        )
        message_id, control_sum = document.message_id, document.control_sum
    await conn.execute(
        "INSERT INTO payout_runs (run_id, quarter, revision, state, file_name, message_id, control_sum)"
        " VALUES ($1, $1, $2, 'written', $3, $4, $5)",
        quarter,
        revision,
        file_name,
        message_id,
        control_sum,
    )
    await conn.execute(
        "UPDATE payout_carry_overs SET settled_by = $1 WHERE settled_by IS NULL AND customer_id = ANY($2::text[])",
        quarter,
        [b.customer_id for b in balances],
    )
    for planned in plan.transfers:
        await conn.execute(
            "INSERT INTO payout_transfers (run_id, payee_kind, payee_id, amount, end_to_end) VALUES ($1, $2, $3, $4, $5)",
            quarter,
            planned.payee_kind.value,
            planned.payee_id,
            planned.transfer.amount,
            planned.transfer.end_to_end_id,
        )
    for carry in plan.carry_overs:
        await conn.execute(
            "INSERT INTO payout_carry_overs (run_id, customer_id, amount, reason) VALUES ($1, $2, $3, $4)",
            quarter,
            carry.customer_id,
            carry.amount,
            carry.reason.value,
        )
    await enqueue(
        conn, "statements", quarter, {"quarter": quarter, "created_at": job.args["created_at"]}
    )


def write_sepa(path: Path, document: SepaDocument) -> None:
    """Validate `document` and write it to `path` atomically, replacing any file there.

    The bytes go to a temporary file in the same directory, are fsynced, and are renamed over
    `path`; the directory is fsynced after. Raises `SepaValidationError` before anything is
    written if the document is invalid, and `OSError` if writing fails; in both cases `path`
    is untouched and no temporary file is left.
    """
    validate_pain001(document)
    write_atomically(Path(path), document.xml)


def _write_payout_file(directory: Path, file_name: str, document: SepaDocument) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_sepa(directory / file_name, document)


_STATEMENT_FIGURES = """
SELECT c.customer_id, c.name, c.email, c.iban, p.name, p.payout_model, p.branding,
       sum(l.ere), sum(l.gross), sum(l.fee), sum(l.fee_vat), sum(l.net),
       max(l.eur_per_ere) FILTER (WHERE l.kind = 'regular')
FROM statement_lines l
JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision)
JOIN customers c USING (customer_id) JOIN partners p USING (partner_id)
WHERE l.quarter = $1 AND q.state = 'closed'
GROUP BY c.customer_id, c.name, c.email, c.iban, p.name, p.payout_model, p.branding
"""
_STATEMENT_SESSIONS = """
SELECT s.customer_id, coalesce(x.stopped_at, x.last_reading_at), s.kwh
FROM statement_sessions s JOIN quarter_closes q ON (q.quarter, q.revision) = (s.quarter, s.revision)
JOIN sessions x USING (session_id)
WHERE s.quarter = $1 AND q.state = 'closed' ORDER BY 1, 2
"""


async def send_statements(conn: Connection, job: Job, settings: EreSettings) -> None:
    """`statements` job: one statement per customer of the quarter not delivered yet."""
    quarter = job.args["quarter"]
    dated = datetime.fromisoformat(job.args["created_at"])
    done = {
        row[0]
        for row in await conn.fetch(
            "SELECT customer_id FROM payout_statements WHERE run_id = $1", quarter
        )
    }
    sessions: dict[str, list[SessionLine]] = defaultdict(list)
    for customer_id, ended_at, kwh in await conn.fetch(_STATEMENT_SESSIONS, quarter):
        sessions[customer_id].append(SessionLine(local_date(ended_at), kwh))
    carried = {
        row[0]: (row[1], row[2])
        for row in await conn.fetch(
            "SELECT customer_id, amount, reason FROM payout_carry_overs WHERE run_id = $1", quarter
        )
    }
    carried_in = {
        row[0]: row[1]
        for row in await conn.fetch(
            "SELECT customer_id, sum(amount) FROM payout_carry_overs WHERE settled_by = $1 GROUP BY 1",
            quarter,
        )
    }
    messages, recipients = [], []
    for row in await conn.fetch(_STATEMENT_FIGURES, quarter):
        (
            customer_id,
            name,
            email,
            iban,
            partner_name,
            model,
            branding,
            ere,
            gross,
            fee,
            vat,
            net,
            price,
        ) = row
        if customer_id in done or not email:
            continue
        carried_over, reason = carried.get(customer_id, (Decimal(0), None))
        paid_to = (
            partner_name if model == "partner-account" else (f"IBAN …{iban[-4:]}" if iban else None)
        )
        statement = PayoutStatement(
            f"{quarter}-{customer_id}",
            name,
            email,
            _period_label(Quarter.parse(quarter)),
            tuple(sessions.get(customer_id, ())),
            ere,
            price or Decimal(0),
            PricingBasis.PER_ERE,
            gross,
            fee,
            vat,
            net,
            carried_in=carried_in.get(customer_id, Decimal(0)),
            carried_over=carried_over,
            paid_to=paid_to,
            carry_over_note=_CARRY_NOTES.get(reason) if reason else None,
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


_CARRY_NOTES = {
    "below-minimum": "below the minimum payout; it is paid with a later quarter",
    "not-positive": "a correction downwards; it is settled against later quarters",
    "no-account": "no bank account on file yet; it is paid once one is known",
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
