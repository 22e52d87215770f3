"""Our fee as an invoice: what a registered booking provider must state when it charges it.

A statement with a fee carries it as an invoice (a negative fee, from a correction, as a credit
note): the provider's name, address, KvK and VAT numbers, an invoice number from a gapless
series per year (`invoice_number`: `<prefix>-<year>-<6-digit seq>`; the payout job assigns the
numbers), the invoice date, the fee without VAT, the VAT and the fee with VAT. The VAT is what
the statement lines computed (each line's fee × 21/121, to the cent), so the invoice and the
lines agree to the cent. Pure: `FeeInvoice.rows` gives the labelled rows a statement renders.

Errors: `ValueError` for a zero fee, a VAT larger than the fee, amounts finer than a cent, or a
sequence number outside 1-999999.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from proxy.ere.core.fees import VAT_RATE

__all__ = ["FeeInvoice", "Provider", "invoice_number"]

_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Provider:
    """The booking provider that invoices its fee (from `[ere] provider_*`)."""

    name: str
    address: str
    kvk: str
    vat_number: str


@dataclass(frozen=True, slots=True)
class FeeInvoice:
    """The fee of one statement as an invoice; a credit note when the fee is negative."""

    number: str
    invoice_date: date
    provider: Provider
    fee: Decimal
    vat: Decimal

    def __post_init__(self) -> None:
        for name in ("fee", "vat"):
            amount = getattr(self, name)
            if not isinstance(amount, Decimal) or amount != amount.quantize(_CENT):
                raise ValueError(f"invoice {name} must be a Decimal in whole cents, got {amount!r}")
        if not self.fee:
            raise ValueError("an invoice needs a fee other than zero")
        if abs(self.vat) > abs(self.fee) or (self.vat and (self.vat < 0) != (self.fee < 0)):
            raise ValueError(f"the VAT {self.vat} does not fit inside the fee {self.fee}")

    @property
    def credit_note(self) -> bool:
        return self.fee < 0

    @property
    def fee_excl_vat(self) -> Decimal:
        return self.fee - self.vat

    @property
    def title(self) -> str:
        return f"{'Credit note' if self.credit_note else 'Invoice'} {self.number}"

    def rows(self) -> list[tuple[str, str]]:
        """Labelled rows: who invoices, the number and date, and the three amounts."""
        p = self.provider
        rate = f"{(VAT_RATE * 100).normalize():f} %"
        return [
            ("From", f"{p.name}, {p.address}"),
            ("KvK", p.kvk),
            ("VAT number", p.vat_number),
            ("Invoice date", self.invoice_date.isoformat()),
            ("Fee without VAT", _euro(self.fee_excl_vat)),
            (f"VAT {rate}", _euro(self.vat)),
            ("Fee with VAT", _euro(self.fee)),
        ]


def invoice_number(prefix: str, year: int, seq: int) -> str:
    """`<prefix>-<year>-<seq as 6 digits>`, e.g. ERE-2026-000001."""
    if not 1 <= seq <= 999_999:
        raise ValueError(f"invoice sequence number {seq} is outside 1-999999")
    return f"{prefix}-{year:04d}-{seq:06d}"


def _euro(amount: Decimal) -> str:
    text = f"{abs(amount).quantize(_CENT):,f}"
    return f"-€{text}" if amount < 0 else f"€{text}"
