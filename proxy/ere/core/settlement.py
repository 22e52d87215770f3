"""The settlement of a pooled transfer: what a partner-account partner's one payment is made of.

A `partner-account` partner receives one transfer for all its customers. Its settlement names
the payout run and the transfer's end-to-end id, and gives per customer the EAN, kWh, ERE,
gross, fee, net, what was carried in from earlier runs and what was carried over, and the
customer's share of the transfer (net + carried in − carried over). The shares add up to the
transfer amount to the cent, or the settlement is refused (`ValueError`): a partner must be
able to pass every cent on. `settlement_csv` and `settlement_html` are pure renderings of the
same rows; every supplied text is escaped in the HTML (and a CSV cell never starts a formula).
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["Settlement", "SettlementRow", "settlement_csv", "settlement_html"]

_CENT = Decimal("0.01")
_COLUMNS = (
    "run",
    "end_to_end_id",
    "customer",
    "name",
    "ean",
    "kwh",
    "ere",
    "gross",
    "fee",
    "net",
    "carried_in",
    "carried_over",
    "paid",
)


@dataclass(frozen=True, slots=True)
class SettlementRow:
    """One customer's part of a pooled transfer."""

    customer_id: str
    name: str
    ean: str
    kwh: Decimal
    ere: Decimal
    gross: Decimal
    fee: Decimal
    net: Decimal
    carried_in: Decimal
    carried_over: Decimal

    @property
    def paid(self) -> Decimal:
        return self.net + self.carried_in - self.carried_over


@dataclass(frozen=True, slots=True)
class Settlement:
    """A partner's pooled transfer of one payout run and the customers it settles."""

    run_id: str
    partner_name: str
    end_to_end_id: str
    amount: Decimal
    rows: tuple[SettlementRow, ...]

    def __post_init__(self) -> None:
        total = sum((row.paid for row in self.rows), Decimal(0))
        if total != self.amount:
            raise ValueError(
                f"settlement of {self.end_to_end_id}: the customers' shares add up to {total},"
                f" the transfer is {self.amount}"
            )


def settlement_csv(settlement: Settlement) -> str:
    """One row per customer, with the run and end-to-end id on each (for spreadsheets)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for row in settlement.rows:
        writer.writerow(
            [_cell(settlement.run_id), _cell(settlement.end_to_end_id)]
            + [_cell(row.customer_id), _cell(row.name), _cell(row.ean)]
            + _figures(row)
        )
    return out.getvalue()


def settlement_html(settlement: Settlement) -> str:
    """A readable page of the same rows, with the transfer's total."""
    escape = html.escape
    head = "".join(f"<th>{escape(name)}</th>" for name in _COLUMNS[2:])
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(text)}</td>"
            for text in (row.customer_id, row.name, row.ean, *_figures(row))
        )
        + "</tr>"
        for row in settlement.rows
    )
    title = f"Settlement of payout run {settlement.run_id}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head>\n<body>\n"
        f"<h1>{escape(title)} for {escape(settlement.partner_name)}</h1>\n"
        f"<p>Transfer {escape(settlement.end_to_end_id)}: {_euro(settlement.amount)}</p>\n"
        f'<table border="1" cellpadding="4">\n<tr>{head}</tr>\n{body}\n'
        f'<tr><th colspan="{len(_COLUMNS) - 3}">Total</th>'
        f"<th>{_money(settlement.amount)}</th></tr>\n</table>\n</body></html>\n"
    )


def _figures(row: SettlementRow) -> list[str]:
    kwh = row.kwh.normalize()
    money = (row.gross, row.fee, row.net, row.carried_in, row.carried_over, row.paid)
    return [f"{kwh:f}", _money(row.ere), *map(_money, money)]


def _money(value: Decimal) -> str:
    return f"{value.quantize(_CENT):f}"


def _cell(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _euro(amount: Decimal) -> str:
    return f"€{amount.quantize(_CENT):,f}"
