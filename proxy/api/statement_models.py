"""Response bodies of `/v1/statements` and `/v1/payouts` (pydantic, at the edge).

kWh, ERE and euros are decimal strings, exact as the books hold them; a fee includes VAT.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "CarryOverOut",
    "CustomerTransferOut",
    "DocumentsOut",
    "InvoiceOut",
    "PayoutItemOut",
    "PayoutItemPage",
    "PayoutOut",
    "PayoutRunOut",
    "SettlementOut",
    "SettlementRowOut",
    "StatementLineOut",
    "StatementOut",
    "StatementPage",
    "StatementSummaryOut",
]

PayoutStatus = Literal["pending", "paid", "carried-over", "nothing-due"]
CarryReason = Literal["below-minimum", "not-positive", "no-account"]


class ProviderOut(BaseModel):
    """The booking provider that invoices its fee."""

    name: str
    address: str
    kvk: str
    vat_number: str


class InvoiceOut(BaseModel):
    """Our fee as an invoice (a credit note when negative), numbered by the payout run."""

    number: str
    invoice_date: date
    credit_note: bool
    fee_excl_vat: Decimal
    vat_rate: Decimal
    vat: Decimal
    fee: Decimal = Field(description="the fee with VAT")
    provider: ProviderOut


class CarryOverOut(BaseModel):
    """An amount the run did not pay: it moves to a later run."""

    amount: Decimal = Field(description="negative: set off against later quarters")
    reason: CarryReason
    detail: str
    settled_by: str | None = Field(description="the later run that settled it; null: still open")


class TransferOut(BaseModel):
    """The bank transfer that paid the amount."""

    payee: Literal["customer", "partner"] = Field(
        description="customer: to the customer's own account; partner: pooled to your account"
    )
    amount: Decimal = Field(description="the whole transfer (a pooled one: all its customers)")
    end_to_end_id: str
    remittance: str | None = Field(description="the remittance information, as configured")


class PayoutOut(BaseModel):
    """Where the statement's money went in the quarter's payout run."""

    status: PayoutStatus = Field(
        description="pending: the quarter is closed, its payout run is not made yet; paid: in a "
        "transfer of the run; carried-over: moved to a later run (see carried_over); "
        "nothing-due: the balance was zero"
    )
    run: str | None = Field(description="the payout run (named by its quarter); null: pending")
    execution_date: date | None
    carried_in: Decimal | None = Field(description="from earlier runs, settled in this one")
    carried_over: CarryOverOut | None
    amount: Decimal | None = Field(
        description="paid in this run: net + carried in − carried over; null: pending"
    )
    transfer: TransferOut | None


class StatementSummaryOut(BaseModel):
    id: str = Field(description="`<quarter>-<customer id>`")
    quarter: str
    customer_id: str
    customer_name: str
    kwh: Decimal
    ere: Decimal
    gross: Decimal
    fee: Decimal
    net: Decimal
    invoice_number: str | None
    payout: PayoutOut


class StatementPage(BaseModel):
    data: list[StatementSummaryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


class CorrectedSessionOut(BaseModel):
    session_id: int
    kwh: Decimal = Field(description="the change in the session's kWh")


class StatementLineOut(BaseModel):
    """One line: a delivery quarter's energy, or a correction of a quarter closed earlier."""

    kind: Literal["regular", "adjustment"]
    delivery_quarter: str
    corrects: str | None = Field(description="the quarter an adjustment corrects")
    kwh: Decimal
    ere: Decimal
    eur_per_ere: Decimal
    gross: Decimal
    fee_rate: Decimal
    fee_rate_reason: str = Field(description="the rate and why, e.g. referral discounts")
    active_referrals: int | None
    fee: Decimal
    net: Decimal
    corrected_sessions: list[CorrectedSessionOut]


class SessionDayOut(BaseModel):
    charged_on: date
    kwh: Decimal


class TotalsOut(BaseModel):
    kwh: Decimal
    ere: Decimal
    gross: Decimal
    fee: Decimal
    fee_vat: Decimal = Field(description="the VAT inside the fee")
    net: Decimal


class DocumentsOut(BaseModel):
    html: str
    pdf: str


class StatementOut(BaseModel):
    id: str
    quarter: str
    customer_id: str
    customer_name: str
    ean: str
    period: str = Field(description="the period as the statement names it")
    sessions: list[SessionDayOut] = Field(description="the sessions of the regular lines")
    lines: list[StatementLineOut]
    totals: TotalsOut
    invoice: InvoiceOut | None = Field(description="null: no fee, or not invoiced yet (pending)")
    payout: PayoutOut
    documents: DocumentsOut | None = Field(
        description="links to the statement as HTML and PDF; null until the payout run made it"
    )


class PayoutItemOut(PayoutOut):
    """One customer's payout of one quarter."""

    statement_id: str
    quarter: str
    customer_id: str
    customer_name: str
    net: Decimal = Field(description="the quarter's net, after our fee")


class PayoutItemPage(BaseModel):
    data: list[PayoutItemOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


class SettlementRowOut(BaseModel):
    """One customer's part of a pooled transfer."""

    customer_id: str
    customer_name: str
    statement_id: str
    ean: str
    kwh: Decimal
    ere: Decimal
    gross: Decimal
    fee: Decimal
    net: Decimal
    carried_in: Decimal
    paid: Decimal = Field(description="net + carried in: the customer's share of the transfer")
    invoice: InvoiceOut | None


class SettlementOut(BaseModel):
    """The transfer to your account and the customers it settles (their shares add up to it)."""

    end_to_end_id: str
    amount: Decimal
    account_name: str | None
    iban: str | None = Field(description="your account, masked")
    remittance: str | None
    customers: list[SettlementRowOut]


class CustomerTransferOut(BaseModel):
    """A transfer to one of your customers' own accounts."""

    customer_id: str
    customer_name: str
    statement_id: str
    net: Decimal
    carried_in: Decimal
    amount: Decimal
    end_to_end_id: str
    remittance: str | None
    invoice: InvoiceOut | None


class CarriedCustomerOut(CarryOverOut):
    customer_id: str
    customer_name: str
    statement_id: str


class PayoutRunOut(BaseModel):
    quarter: str
    execution_date: date | None
    created_at: datetime
    payout_model: Literal["direct", "partner-account"]
    total_paid: Decimal = Field(description="all transfers of the run for your customers")
    total_carried_over: Decimal
    settlement: SettlementOut | None = Field(
        description="partner-account: the pooled transfer to your account; null: none was made"
    )
    transfers: list[CustomerTransferOut] = Field(description="direct: one per customer paid")
    carry_overs: list[CarriedCustomerOut]
