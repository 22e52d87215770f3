"""Our fee as an invoice: what a registered booking provider must state when it charges it.

A statement with a fee carries it as an invoice (a negative fee, from a correction, as a credit
note): the provider's name, address, KvK and VAT numbers, an invoice number from a gapless
series per year (`invoice_number`: `<prefix>-<year>-<6-digit seq>`; the payout job assigns the
numbers), the invoice date, the fee without VAT, the VAT and the fee with VAT. The VAT is what
the statement lines computed (each line's fee × 21/121, to the cent), so the invoice and the
lines agree to the cent. Pure: `FeeInvoice.title` and `FeeInvoice.rows` give the heading and
the labelled rows a statement renders, in Dutch unless English is asked for
(`proxy.ere.core.statement_texts`).

Errors: `ValueError` for a zero fee, a VAT larger than the fee, amounts finer than a cent, or a
sequence number outside 1-999999.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from proxy.ere.core.fees import VAT_RATE
from proxy.ere.core.statement_texts import DEFAULT_LANGUAGE, texts_for

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

    def title(self, language: str = DEFAULT_LANGUAGE) -> str:
        """The heading: "Factuur ERE-2026-000001" or "Creditnota …" (English: "Invoice …")."""
        texts = texts_for(language)
        return (texts.credit_note if self.credit_note else texts.invoice).format(number=self.number)

    def rows(self, language: str = DEFAULT_LANGUAGE) -> list[tuple[str, str]]:
        """Labelled rows: who invoices, the number and date, and the three amounts."""
        texts = texts_for(language)
        p = self.provider
        return [
            (texts.invoice_from, f"{p.name}, {p.address}"),
            (texts.kvk, p.kvk),
            (texts.vat_number, p.vat_number),
            (texts.invoice_date, texts.day(self.invoice_date)),
            (texts.fee_excl_vat, texts.euro(self.fee_excl_vat)),
            (texts.vat.format(rate=texts.percent(VAT_RATE)), texts.euro(self.vat)),
            (texts.fee_incl_vat, texts.euro(self.fee)),
        ]


def invoice_number(prefix: str, year: int, seq: int) -> str:
    """`<prefix>-<year>-<seq as 6 digits>`, e.g. ERE-2026-000001."""
    if not 1 <= seq <= 999_999:
        raise ValueError(f"invoice sequence number {seq} is outside 1-999999")
    return f"{prefix}-{year:04d}-{seq:06d}"
