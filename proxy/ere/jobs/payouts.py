"""Paying a closed quarter out: the payout run (one pain.001 file) and the customers' statements.

`ere-proxy payout run 2026Q3` queues a `payout` job with the run's dates fixed at that moment.
Its handler sums each customer's net over the quarter's statement lines (regular and
adjustment), adds what the customer carried in from earlier runs, plans the transfers
(`core.payout_plan.plan_payouts`: one per direct customer, one per partner-account partner;
amounts below `payout_minimum`, not positive, or without an account carry over; a transfer to
a customer of a partner whose branding asks for it names the partner in its remittance
information, `<remittance> via <partner>`), builds and
validates the pain.001 document (`core.sepa`), writes it whole to
`<payout_dir>/payout-<quarter>.xml` (`write_sepa`), and records the run, its transfers and
carry-overs in the job's transaction. The pain.001 requests the execution date given to
`request_payout` (default: the day the run is requested; never in the past, at most a year
ahead), stored on the run. Beside it, each pooled transfer to a partner-account partner gets
its settlement, `settlement-<quarter>-<partner>.csv` and `.html` (`core.settlement`: per
customer EAN, kWh, ERE, gross, fee, net and carry-overs, adding up to the transfer).

Invoices: every touched customer whose fee this quarter is not zero gets an invoice number
(`<prefix>-<year>-<6-digit seq>`, a gapless series per year, credit notes included) in the
job's transaction, under a table lock, before the file is written: a run that fails takes no
numbers, and its rerun takes the same ones. The run id is the quarter: the primary keys allow one run
per quarter and one transfer per payee in it. A worker killed half-way leaves no rows, and the
rerun writes the same bytes again (identifiers and dates are deterministic), so there is only
ever one file and one transfer per payee.

A `statements` job then renders the statement of every customer the run touched
(`proxy.ere.jobs.payout_statements`) and sends it over SMTP, or writes .eml files to
`statement_dir` (`proxy.ere.jobs.statement_delivery`); deliveries are recorded in
`payout_statements`. A
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

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import trio

from proxy.ere.core.branding import PartnerBranding
from proxy.ere.core.fee_invoice import invoice_number
from proxy.ere.core.fees import vat_included_in
from proxy.ere.core.payout_plan import (
    CustomerBalance,
    PartnerPayout,
    PayoutModel,
    PayoutPlan,
    plan_payouts,
)
from proxy.ere.core.quarters import Quarter, local_date
from proxy.ere.core.sepa import (
    BankAccount,
    Debtor,
    PayeeKind,
    SepaDocument,
    build_credit_transfer,
    validate_pain001,
)
from proxy.ere.core.settlement import Settlement, SettlementRow, settlement_csv, settlement_html
from proxy.ere.jobs.files import write_atomically
from proxy.ere.jobs.payout_statements import send_statements
from proxy.ere.jobs.queue import Job, enqueue
from proxy.runtime.config import EreSettings
from proxy.store.connection import Connection

__all__ = ["PayoutRefused", "request_payout", "run_payout", "send_statements", "write_sepa"]


class PayoutRefused(ValueError):
    """A payout run the rules forbid (quarter not closed, already paid, no debtor account)."""


async def request_payout(
    conn: Connection,
    quarter: Quarter,
    settings: EreSettings,
    now: datetime,
    execution_date: date | None = None,
) -> bool:
    """Queue the payout run of a closed quarter; False if it was queued before.

    `execution_date` (default: `now`'s Dutch date) is refused before that date or more than a
    year after it.
    """
    today = local_date(now)
    execution_date = today if execution_date is None else execution_date
    if execution_date < today:
        raise PayoutRefused(f"execution-date: {execution_date} is in the past (today is {today})")
    if execution_date > _a_year_after(today):
        raise PayoutRefused(
            f"execution-date: {execution_date} is more than a year ahead (today is {today})"
        )
    state = await conn.fetchval(
        "SELECT state FROM quarter_closes WHERE quarter = $1 AND state <> 'reopened'", str(quarter)
    )
    if state != "closed":
        raise PayoutRefused(f"{quarter} is not closed" + (f" (it is {state})" if state else ""))
    _require_accounts(settings)
    args = {
        "quarter": str(quarter),
        "created_at": now.isoformat(),
        "execution_date": execution_date.isoformat(),
    }
    return await enqueue(conn, "payout", str(quarter), args)


def _require_accounts(settings: EreSettings) -> None:
    """PayoutRefused unless the settings name the account paid from and the provider who
    invoices the fee (every statement carries its fee as an invoice, which must say who we are)."""
    if not (settings.debtor_name and settings.debtor_iban and settings.debtor_bic):
        raise PayoutRefused("set ere.debtor_name, ere.debtor_iban and ere.debtor_bic to pay out")
    missing = [
        f"ere.{name}"
        for name in ("provider_name", "provider_address", "provider_kvk", "provider_vat_number")
        if not getattr(settings, name)
    ]
    if missing:
        raise PayoutRefused(
            f"set {', '.join(missing)} to pay out: every statement invoices our fee in that name"
        )


def _a_year_after(day: date) -> date:
    """The same day a year later (29 February: 28 February)."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:
        return day.replace(year=day.year + 1, day=28)


_BALANCES = """
SELECT c.customer_id, c.partner_id, c.name, c.iban, c.ean, coalesce(l.net, 0), coalesce(k.carried, 0),
       coalesce(l.kwh, 0), coalesce(l.ere, 0), coalesce(l.gross, 0), coalesce(l.fee, 0), coalesce(l.fee_vat, 0)
FROM customers c
LEFT JOIN (
    SELECT customer_id, sum(net) AS net, sum(kwh) AS kwh, sum(ere) AS ere, sum(gross) AS gross,
           sum(fee) AS fee, sum(fee_vat) AS fee_vat
    FROM statement_lines sl JOIN quarter_closes q ON (q.quarter, q.revision) = (sl.quarter, sl.revision)
    WHERE sl.quarter = $1 AND q.state = 'closed' GROUP BY customer_id
) l USING (customer_id)
LEFT JOIN (
    SELECT customer_id, sum(amount) AS carried FROM payout_carry_overs WHERE settled_by IS NULL GROUP BY customer_id
) k USING (customer_id)
WHERE l.net IS NOT NULL OR k.carried IS NOT NULL
ORDER BY c.customer_id
"""


async def run_payout(conn: Connection, job: Job, settings: EreSettings) -> None:
    """`payout` job: plan, invoice the fees, write the files, record the run (module docstring)."""
    quarter = job.args["quarter"]
    _require_accounts(settings)
    # One run at a time: two runs reading the same unsettled carry-overs would both pay them.
    # FOR SHARE keeps the close as it is until this run is recorded (a reopen waits, then sees
    # the run and is refused).
    await conn.execute("LOCK TABLE payout_carry_overs IN EXCLUSIVE MODE")
    revision = await conn.fetchval(
        "SELECT revision FROM quarter_closes WHERE quarter = $1 AND state = 'closed' FOR SHARE",
        quarter,
    )
    if revision is None:
        raise PayoutRefused(f"{quarter} is not closed")
    rows = await conn.fetch(_BALANCES, quarter)
    balances = [
        CustomerBalance(
            row[0], row[1], row[5], row[6], BankAccount(row[2], row[3]) if row[3] else None
        )
        for row in rows
    ]
    remittance = settings.remittance.format(quarter=quarter)
    partners = {
        partner_id: PartnerPayout(
            partner_id,
            PayoutModel(model),
            BankAccount(account_name or name, iban) if iban else None,
            PartnerBranding.from_stored(name, branding).remittance(remittance),
        )
        for partner_id, name, model, iban, account_name, branding in await conn.fetch(
            "SELECT partner_id, name, payout_model, iban, account_name, branding FROM partners"
        )
    }
    plan = plan_payouts(
        balances,
        partners,
        minimum=Decimal(settings.payout_minimum),
        payout_run_id=quarter,
        remittance=remittance,
    )
    created_at = datetime.fromisoformat(job.args["created_at"])
    execution_date = date.fromisoformat(job.args["execution_date"])
    await conn.execute(
        "INSERT INTO payout_runs (run_id, quarter, revision, state, execution_date)"
        " VALUES ($1, $1, $2, 'planned', $3)",
        quarter,
        revision,
        execution_date,
    )
    await _issue_invoices(conn, quarter, local_date(created_at), rows, settings.invoice_prefix)
    files: dict[str, bytes] = {}
    message_id = control_sum = None
    if plan.transfers:
        document = build_credit_transfer(
            Debtor(settings.debtor_name, settings.debtor_iban, settings.debtor_bic),
            [planned.transfer for planned in plan.transfers],
            execution_date=execution_date,
            created_at=created_at,
            payout_run_id=quarter,
        )
        validate_pain001(document)
        files[f"payout-{quarter}.xml"] = document.xml
        files.update(_settlement_files(quarter, plan, rows, await _names(conn)))
        message_id, control_sum = document.message_id, document.control_sum
    if files:
        await trio.to_thread.run_sync(_write_payout_files, Path(settings.payout_dir), files)
    await conn.execute(
        "UPDATE payout_runs SET state = 'written', file_name = $2, message_id = $3, control_sum = $4"
        " WHERE run_id = $1",
        quarter,
        f"payout-{quarter}.xml" if plan.transfers else None,
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


async def _issue_invoices(
    conn: Connection, run_id: str, invoice_date: date, rows: list[Any], prefix: str
) -> None:
    """Number the fee of every balance with one, next in the year's gapless series.

    The VAT of an invoice is that of its total fee (fee × 21/121, to the cent), not the sum of
    the lines' VAT: lines of both signs (a correction) could otherwise add up to more VAT than
    the fee, or VAT of the other sign.
    """
    await conn.execute("LOCK TABLE invoices IN EXCLUSIVE MODE")
    year = invoice_date.year
    seq = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM invoices WHERE year = $1", year)
    for row in rows:
        customer_id, fee = row[0], row[10]
        if not fee:
            continue
        vat = vat_included_in(fee)
        seq += 1
        await conn.execute(
            "INSERT INTO invoices (invoice_number, year, seq, run_id, customer_id, invoice_date, credit_note,"
            " fee_excl_vat, vat, fee) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            invoice_number(prefix, year, seq),
            year,
            seq,
            run_id,
            customer_id,
            invoice_date,
            fee < 0,
            fee - vat,
            vat,
            fee,
        )


async def _names(conn: Connection) -> dict[str, str]:
    return dict(await conn.fetch("SELECT partner_id, name FROM partners"))


def _settlement_files(
    run_id: str, plan: PayoutPlan, rows: list[Any], partner_names: dict[str, str]
) -> dict[str, bytes]:
    """The settlement (CSV and HTML) of every pooled transfer of `plan`."""
    by_customer = {row[0]: row for row in rows}
    files = {}
    for planned in plan.transfers:
        if planned.payee_kind is not PayeeKind.PARTNER:
            continue
        members = []
        for customer_id, _share in planned.shares:
            row = by_customer[customer_id]
            members.append(
                SettlementRow(
                    customer_id,
                    row[2],
                    row[4],
                    row[7],
                    row[8],
                    row[9],
                    row[10],
                    row[5],
                    row[6],
                    Decimal(0),
                )
            )
        settlement = Settlement(
            run_id,
            partner_names[planned.payee_id],
            planned.transfer.end_to_end_id,
            planned.transfer.amount,
            tuple(members),
        )
        stem = f"settlement-{run_id}-{planned.payee_id}"
        files[f"{stem}.csv"] = settlement_csv(settlement).encode()
        files[f"{stem}.html"] = settlement_html(settlement).encode()
    return files


def write_sepa(path: Path, document: SepaDocument) -> None:
    """Validate `document` and write it to `path` atomically, replacing any file there.

    The bytes go to a temporary file in the same directory, are fsynced, and are renamed over
    `path`; the directory is fsynced after. Raises `SepaValidationError` before anything is
    written if the document is invalid, and `OSError` if writing fails; in both cases `path`
    is untouched and no temporary file is left.
    """
    validate_pain001(document)
    write_atomically(Path(path), document.xml)


def _write_payout_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write each file whole (the pain.001 was validated when it was built)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_atomically(directory / name, content)
