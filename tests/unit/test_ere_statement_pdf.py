"""The payout statement as a PDF (pure): the e-mail's text on a branded page, deterministic,
in either language, with any name a customer may have."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from proxy.ere.core.fee_invoice import FeeInvoice, Provider
from proxy.ere.core.statement_mail import (
    FigureLine,
    PartnerBranding,
    PayoutStatement,
    PricingBasis,
    StatementLine,
    render_text,
)
from proxy.ere.core.statement_pdf import render_pdf
from testkit.pdf_text import pdf_text

DATED = datetime(2027, 2, 1, 9, tzinfo=UTC)
BRAND = PartnerBranding("Acme Energie", colour="#FFCC00", footer_text="Acme Energie B.V.")


def statement(name: str = "Anna de Vries", sessions: int = 1) -> PayoutStatement:
    line = FigureLine(
        "2026Q3",
        False,
        Decimal("42.37"),
        Decimal("14.10"),
        Decimal("0.30"),
        Decimal("4.23"),
        Decimal("0.18"),
        Decimal("0.76"),
        Decimal("3.47"),
        active_referrals=1,
        referral_step=Decimal("0.02"),
    )
    invoice = FeeInvoice(
        "ERE-2027-000001",
        date(2027, 2, 1),
        Provider("ERE Provider BV", "Stationsplein 1", "12345678", "NL123456789B01"),
        Decimal("0.76"),
        Decimal("0.13"),
    )
    return PayoutStatement(
        "2026Q3-A",
        name,
        "anna@example.nl",
        "2026Q3",
        tuple(StatementLine(date(2026, 8, 5), Decimal("1")) for _ in range(sessions)),
        Decimal("14.10"),
        None,
        PricingBasis.PER_ERE,
        Decimal("4.23"),
        Decimal("0.76"),
        Decimal("0.13"),
        Decimal("3.47"),
        paid_to="IBAN …4300",
        lines=(line,),
        invoice=invoice,
    )


def test_the_pdf_shows_the_e_mails_text_under_the_brand():
    pdf = render_pdf(statement(), BRAND, dated=DATED)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    shown = pdf_text(pdf)
    assert "Acme Energie" in shown and "Anna de Vries" in shown
    assert "€ 3,47" in shown and "ERE-2027-000001" in shown  # Dutch, as the e-mail
    # Every non-empty line of the text is there (long ones wrapped, so compare words).
    words = shown.split()
    for line in render_text(statement(), BRAND).splitlines()[1:]:
        for word in line.split():
            assert word in words, word
    english = pdf_text(render_pdf(statement(), BRAND, dated=DATED, language="en"))
    assert "€3.47" in english and "Dear Anna de Vries," in english


def test_the_same_statement_gives_the_same_bytes():
    assert render_pdf(statement(), BRAND, dated=DATED) == render_pdf(
        statement(), BRAND, dated=DATED
    )


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Łukasz Wałęsa", "Lukasz Walesa"),
        ("Zoë (de) Vries \\", "Zoë (de) Vries \\"),
        ("李小龙", "???"),
        ("Evil\r\nX-Header: 1", "Evil X-Header: 1"),
    ],
)
def test_any_name_is_written_as_the_built_in_fonts_can_show_it(name, shown):
    assert shown in pdf_text(render_pdf(statement(name), BRAND, dated=DATED))


def test_a_long_statement_runs_onto_more_pages():
    pdf = render_pdf(statement(sessions=300), BRAND, dated=DATED)
    assert pdf.count(b"/Type /Page\n") > 1 or pdf.count(b"/Type /Page\r") > 1


def test_a_naive_date_or_an_unknown_language_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        render_pdf(statement(), BRAND, dated=datetime(2027, 2, 1))
    with pytest.raises(ValueError):
        render_pdf(statement(), BRAND, dated=DATED, language="de")
