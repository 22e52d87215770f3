"""The partner API's statements and payouts as it answers them, sans-IO: rows in, bodies out.

The rows are those `proxy.api.statement_data` reads (one per customer and quarter, with the
run, carry-overs, invoice and transfers that concern them); the bodies are what
`proxy.api.statement_models` declares. A payout is `pending` without a run; after it
`carried-over` when the run carried the customer's amount over, `nothing-due` for a zero
balance, and `paid` otherwise, with the transfer that paid it (one to the customer, or the pool
to a partner-account partner). The remittance information is recomputed as the payout job forms it
(`[ere] remittance`, naming the partner on a transfer to its customer when its branding asks);
a format the settings cannot fill gives none. Euros and ERE are shown to the cent, kWh exact.
Pure: no database, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from proxy.api.numbers import plain
from proxy.ere.core.branding import PartnerBranding
from proxy.ere.core.fees import VAT_RATE
from proxy.ere.jobs.payout_statements import CARRY_NOTES, CustomerStatement, statement_id
from proxy.runtime.config import EreSettings

__all__ = ["payout_item", "payout_run", "statement_body", "statement_summary"]

Row = Mapping[str, Any]
_ZERO = Decimal(0)
_CENT = Decimal("0.01")


def _cents(value: Decimal) -> Decimal:
    """Euros (or ERE) as shown: to the cent, the books' amounts already are."""
    return value.quantize(_CENT)


def payout_item(settings: EreSettings, row: Row, partner: Row) -> dict[str, Any]:
    """One customer's payout of one quarter (`PayoutItemOut`)."""
    return {
        "statement_id": statement_id(row["quarter"], row["customer_id"]),
        "quarter": row["quarter"],
        "customer_id": row["customer_id"],
        "customer_name": row["name"],
        "net": _cents(row["net"]),
    } | _payout(settings, row, partner)


def statement_summary(settings: EreSettings, row: Row, partner: Row) -> dict[str, Any]:
    """A statement's figures and payout (`StatementSummaryOut`)."""
    return {
        "id": statement_id(row["quarter"], row["customer_id"]),
        "quarter": row["quarter"],
        "customer_id": row["customer_id"],
        "customer_name": row["name"],
        "kwh": plain(row["kwh"]),
        "ere": _cents(row["ere"]),
        "gross": _cents(row["gross"]),
        "fee": _cents(row["fee"]),
        "net": _cents(row["net"]),
        "invoice_number": row["invoice_number"],
        "payout": _payout(settings, row, partner),
    }


def _payout(settings: EreSettings, row: Row, partner: Row) -> dict[str, Any]:
    if not row["run_made"]:
        return {
            "status": "pending",
            "run": None,
            "execution_date": None,
            "carried_in": None,
            "carried_over": None,
            "amount": None,
            "transfer": None,
        }
    carried_in = row["carried_in"] or _ZERO
    carried = row["carried_over"]
    amount = row["net"] + carried_in - (carried or _ZERO)
    transfer = None
    if carried is not None:
        status = "carried-over"
    elif not amount:
        status = "nothing-due"
    else:
        status = "paid"
        if row["own_end_to_end"] is not None:
            transfer = _transfer("customer", row["own_amount"], row["own_end_to_end"])
        elif row["pool_end_to_end"] is not None:
            transfer = _transfer("partner", row["pool_amount"], row["pool_end_to_end"])
        if transfer is not None:
            transfer["remittance"] = _remittance(
                settings, row["quarter"], transfer["payee"], partner
            )
    return {
        "status": status,
        "run": row["quarter"],
        "execution_date": row["execution_date"],
        "carried_in": _cents(carried_in),
        "carried_over": None if carried is None else _carry_over(row),
        "amount": _cents(amount),
        "transfer": transfer,
    }


def _transfer(payee: str, amount: Decimal, end_to_end: str) -> dict[str, Any]:
    return {"payee": payee, "amount": _cents(amount), "end_to_end_id": end_to_end}


def _carry_over(row: Row) -> dict[str, Any]:
    reason = row["reason"]
    return {
        "amount": _cents(row["carried_over"]),
        "reason": reason,
        "detail": CARRY_NOTES.get(reason, reason),
        "settled_by": row["settled_by"],
    }


def _remittance(settings: EreSettings, quarter: str, payee: str, partner: Row) -> str | None:
    """The remittance information of a transfer, as the payout job forms it from the
    settings (a transfer to a customer may name the partner, by its branding)."""
    try:
        base = settings.remittance.format(quarter=quarter)
        if payee != "customer":
            return base
        return PartnerBranding.from_stored(partner["name"], partner["branding"]).remittance(base)
    except (KeyError, IndexError, ValueError):
        return None


def _invoice(
    settings: EreSettings,
    number: str | None,
    day: date | None,
    excl: Decimal,
    vat: Decimal,
    fee: Decimal,
) -> dict[str, Any] | None:
    if number is None:
        return None
    return {
        "number": number,
        "invoice_date": day,
        "credit_note": fee < 0,
        "fee_excl_vat": _cents(excl),
        "vat_rate": plain(VAT_RATE),
        "vat": _cents(vat),
        "fee": _cents(fee),
        "provider": {
            "name": settings.provider_name,
            "address": settings.provider_address,
            "kvk": settings.provider_kvk,
            "vat_number": settings.provider_vat_number,
        },
    }


def _row_invoice(settings: EreSettings, row: Row) -> dict[str, Any] | None:
    return _invoice(
        settings,
        row["invoice_number"],
        row["invoice_date"],
        row["fee_excl_vat"],
        row["invoice_vat"],
        row["invoice_fee"],
    )


def statement_body(
    settings: EreSettings, row: Row, partner: Row, made: CustomerStatement
) -> dict[str, Any]:
    """A statement in full (`StatementOut`), its lines from the statements job's builder."""
    statement = made.statement
    invoice = statement.invoice
    the_id = statement_id(row["quarter"], row["customer_id"])
    return {
        "id": the_id,
        "quarter": row["quarter"],
        "customer_id": row["customer_id"],
        "customer_name": row["name"],
        "ean": row["ean"],
        "period": statement.period_label,
        "sessions": [
            {"charged_on": day.charged_on, "kwh": plain(day.kwh)} for day in statement.sessions
        ],
        "lines": [
            {
                "kind": "adjustment" if line.correction else "regular",
                "delivery_quarter": line.delivery_quarter,
                "corrects": line.delivery_quarter if line.correction else None,
                "kwh": plain(line.kwh),
                "ere": _cents(line.ere),
                "eur_per_ere": plain(line.eur_per_ere),
                "gross": _cents(line.gross),
                "fee_rate": plain(line.fee_rate),
                "fee_rate_reason": line.rate_text("en"),
                "active_referrals": line.active_referrals,
                "fee": _cents(line.fee),
                "net": _cents(line.net),
                "corrected_sessions": [
                    {"session_id": session, "kwh": plain(kwh)} for session, kwh in line.corrected
                ],
            }
            for line in statement.lines
        ],
        "totals": {
            "kwh": plain(statement.stated_kwh),
            "ere": _cents(statement.ere),
            "gross": _cents(statement.gross),
            "fee": _cents(statement.fee),
            "fee_vat": _cents(statement.fee_vat),
            "net": _cents(statement.net),
        },
        "invoice": None
        if invoice is None
        else _invoice(
            settings,
            invoice.number,
            invoice.invoice_date,
            invoice.fee_excl_vat,
            invoice.vat,
            invoice.fee,
        ),
        "payout": _payout(settings, row, partner),
        "documents": {
            "html": f"/v1/statements/{the_id}?format=html",
            "pdf": f"/v1/statements/{the_id}?format=pdf",
        }
        if row["run_made"]
        else None,
    }


def payout_run(
    settings: EreSettings, quarter: str, run: Row, rows: list[Row], partner: Row
) -> dict[str, Any]:
    """A payout run as it concerns one partner (`PayoutRunOut`): `rows` are all its items."""
    pool = next((row for row in rows if row["pool_end_to_end"] is not None), None)
    transfers, carry_overs, members = [], [], []
    for row in rows:
        payout = _payout(settings, row, partner)
        named = {
            "customer_id": row["customer_id"],
            "customer_name": row["name"],
            "statement_id": statement_id(quarter, row["customer_id"]),
        }
        if payout["carried_over"] is not None:
            carry_overs.append(named | payout["carried_over"])
        transfer = payout["transfer"]
        if transfer is None:
            continue
        if transfer["payee"] == "customer":
            transfers.append(
                named
                | {
                    "net": _cents(row["net"]),
                    "carried_in": payout["carried_in"],
                    "amount": transfer["amount"],
                    "end_to_end_id": transfer["end_to_end_id"],
                    "remittance": transfer["remittance"],
                    "invoice": _row_invoice(settings, row),
                }
            )
        else:
            members.append(
                named
                | {
                    "ean": row["ean"],
                    "kwh": plain(row["kwh"]),
                    **{k: _cents(row[k]) for k in ("ere", "gross", "fee", "net")},
                    "carried_in": payout["carried_in"],
                    "paid": payout["amount"],
                    "invoice": _row_invoice(settings, row),
                }
            )
    settlement = None
    if pool is not None:
        iban = partner["iban"]
        settlement = {
            "end_to_end_id": pool["pool_end_to_end"],
            "amount": _cents(pool["pool_amount"]),
            "account_name": partner["account_name"],
            "iban": f"…{iban[-4:]}" if iban else None,
            "remittance": _remittance(settings, quarter, "partner", partner),
            "customers": members,
        }
    model = "partner-account" if pool is not None else "direct"
    if pool is None and not transfers:
        model = partner["payout_model"]
    paid = sum((Decimal(t["amount"]) for t in transfers), _ZERO)
    if pool is not None:
        paid += pool["pool_amount"]
    return {
        "quarter": quarter,
        "execution_date": run["execution_date"],
        "created_at": run["created_at"],
        "payout_model": model,
        "total_paid": _cents(paid),
        "total_carried_over": _cents(sum((Decimal(c["amount"]) for c in carry_overs), _ZERO)),
        "settlement": settlement,
        "transfers": transfers,
        "carry_overs": carry_overs,
    }
