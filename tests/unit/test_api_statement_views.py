"""The statements and payouts answers (pure): a payout's status from the rows of the books,
the transfer that paid it with its remittance, and a run's settlement adding up."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from proxy.api.statement_views import payout_item, payout_run
from proxy.runtime.config import EreSettings

SETTINGS = EreSettings(provider_name="ERE Provider BV")
PARTNER = {
    "name": "Supplier Two",
    "payout_model": "partner-account",
    "iban": "NL20INGB0001234567",
    "account_name": "Supplier Two BV",
    "branding": '{"remittance_name": true}',
}


def row(customer: str = "A", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "quarter": "2026Q3",
        "customer_id": customer,
        "name": f"Customer {customer}",
        "ean": "871687120000000011",
        "kwh": Decimal("30"),
        "ere": Decimal("9.98"),
        "gross": Decimal("2.99"),
        "fee": Decimal("0.60"),
        "net": Decimal("2.39"),
        "run_made": True,
        "execution_date": date(2026, 10, 20),
        "run_at": datetime(2026, 10, 20, tzinfo=UTC),
        "carried_in": None,
        "carried_over": None,
        "reason": None,
        "settled_by": None,
        "invoice_number": None,
        "invoice_date": None,
        "credit_note": None,
        "fee_excl_vat": None,
        "invoice_vat": None,
        "invoice_fee": None,
        "own_amount": None,
        "own_end_to_end": None,
        "pool_amount": None,
        "pool_end_to_end": None,
    }
    return base | fields


@pytest.mark.parametrize(
    ("fields", "status", "amount"),
    [
        ({"run_made": False}, "pending", None),
        ({"carried_over": Decimal("2.39"), "reason": "below-minimum"}, "carried-over", "0.00"),
        ({"net": Decimal(0)}, "nothing-due", "0.00"),
        ({"own_amount": Decimal("3.39"), "own_end_to_end": "E2E-1"}, "paid", "2.39"),
        (
            {"carried_in": Decimal("1.00"), "own_amount": Decimal("3.39"), "own_end_to_end": "E"},
            "paid",
            "3.39",
        ),
    ],
)
def test_a_payouts_status_and_amount_follow_from_the_run(fields, status, amount):
    item = payout_item(SETTINGS, row(**fields), PARTNER)
    assert (item["status"], item["amount"]) == (status, None if amount is None else Decimal(amount))


def test_a_transfer_to_a_customer_names_the_partner_when_its_branding_asks():
    item = payout_item(SETTINGS, row(own_amount=Decimal("2.39"), own_end_to_end="E"), PARTNER)
    assert item["transfer"]["remittance"] == "ERE payout 2026Q3 via Supplier Two"
    odd = EreSettings(remittance="ERE {unknown}")
    item = payout_item(odd, row(own_amount=Decimal("2.39"), own_end_to_end="E"), PARTNER)
    assert item["transfer"]["remittance"] is None


def test_a_pooled_run_is_a_settlement_whose_shares_add_up_to_the_transfer():
    pool = {"pool_amount": Decimal("3.23"), "pool_end_to_end": "E2E-P2"}
    rows = [
        row("B", **pool),
        row("D", net=Decimal("0.84"), **pool),
        row("E", net=Decimal("0.50"), carried_over=Decimal("0.50"), reason="no-account"),
    ]
    run = payout_run(
        SETTINGS, "2026Q3", {"execution_date": None, "created_at": None}, rows, PARTNER
    )
    settlement = run["settlement"]
    assert run["payout_model"] == "partner-account" and run["transfers"] == []
    assert settlement["amount"] == sum(member["paid"] for member in settlement["customers"])
    assert settlement["iban"] == "…4567" and settlement["remittance"] == "ERE payout 2026Q3"
    assert [c["customer_id"] for c in run["carry_overs"]] == ["E"]
    assert (run["total_paid"], run["total_carried_over"]) == (Decimal("3.23"), Decimal("0.50"))
