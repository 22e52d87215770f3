"""The words and number formats of statements: Dutch (nl-NL) by default, English on request."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from proxy.ere.core.quarters import Quarter
from proxy.ere.core.statement_texts import (
    DEFAULT_LANGUAGE,
    DUTCH,
    ENGLISH,
    StatementTexts,
    texts_for,
)


def test_dutch_is_the_default() -> None:
    assert DEFAULT_LANGUAGE == "nl" and texts_for("nl") is DUTCH and texts_for("en") is ENGLISH


@pytest.mark.parametrize(
    ("texts", "amount", "shown"),
    [
        (DUTCH, "3.99", "€ 3,99"),
        (DUTCH, "1234.56", "€ 1.234,56"),
        (DUTCH, "1234567.8", "€ 1.234.567,80"),
        (DUTCH, "-3.99", "€ -3,99"),
        (DUTCH, "-1234.56", "€ -1.234,56"),
        (DUTCH, "0", "€ 0,00"),
        (DUTCH, "-0.00", "€ 0,00"),  # no negative zero
        (ENGLISH, "3.99", "€3.99"),
        (ENGLISH, "1234.56", "€1,234.56"),
        (ENGLISH, "-3.99", "-€3.99"),
        (ENGLISH, "-1234.56", "-€1,234.56"),
        (ENGLISH, "-0.00", "€0.00"),
    ],
)
def test_euros(texts: StatementTexts, amount: str, shown: str) -> None:
    assert texts.euro(Decimal(amount)) == shown


@pytest.mark.parametrize(
    ("texts", "kwh", "shown"),
    [
        (DUTCH, "12.345", "12,345"),
        (DUTCH, "1234.5675", "1.234,568"),  # half up, to the Wh
        (DUTCH, "42.37", "42,370"),
        (DUTCH, "-2.5", "-2,500"),
        (ENGLISH, "12.345", "12.345"),
        (ENGLISH, "1234.5675", "1,234.568"),
        (ENGLISH, "-2.5", "-2.500"),
    ],
)
def test_kwh_with_three_decimals(texts: StatementTexts, kwh: str, shown: str) -> None:
    assert texts.kwh(Decimal(kwh)) == shown


def test_a_change_of_energy_always_has_its_sign() -> None:
    assert DUTCH.signed_kwh(Decimal("40")) == "+40,000"
    assert DUTCH.signed_kwh(Decimal("-2.5")) == "-2,500"
    assert ENGLISH.signed_kwh(Decimal("1234.5")) == "+1,234.500"


@pytest.mark.parametrize(
    ("texts", "price", "shown"),
    [
        (DUTCH, "0.2833", "€ 0,2833"),
        (DUTCH, "0.28335", "€ 0,2834"),
        (DUTCH, "1", "€ 1,00"),
        (DUTCH, "0.125", "€ 0,125"),
        (DUTCH, "-0.3", "€ -0,30"),
        (ENGLISH, "0.2833", "€0.2833"),
        (ENGLISH, "1", "€1.00"),
        (ENGLISH, "-0.3", "-€0.30"),
    ],
)
def test_unit_prices_keep_two_to_four_decimals(
    texts: StatementTexts, price: str, shown: str
) -> None:
    assert texts.unit_price(Decimal(price)) == shown


def test_ere_and_percentages() -> None:
    assert DUTCH.ere(Decimal("1234.565")) == "1.234,57"
    assert ENGLISH.ere(Decimal("1234.565")) == "1,234.57"
    assert DUTCH.percent(Decimal("0.20")) == "20%"
    assert DUTCH.percent(Decimal("0.175")) == "17,5%"
    assert ENGLISH.percent(Decimal("0.175")) == "17.5 %"


def test_dates_and_periods() -> None:
    assert DUTCH.day(date(2026, 6, 25)) == "25-06-2026"
    assert ENGLISH.day(date(2026, 6, 25)) == "2026-06-25"
    q2 = Quarter.parse("2026Q2")
    assert DUTCH.period_of(q2) == "2026Q2 (01-04-2026 t/m 30-06-2026)"
    assert ENGLISH.period_of(q2) == "2026Q2 (01 April 2026 – 30 June 2026)"


def test_carry_over_notes_by_reason() -> None:
    assert DUTCH.carry_note("no-account") == (
        "nog geen bankrekening bekend; het wordt uitbetaald zodra die bekend is"
    )
    assert ENGLISH.carry_note("below-minimum") == (
        "below the minimum payout; it is paid with a later quarter"
    )
    assert DUTCH.carry_note("unknown") is None


@pytest.mark.parametrize("language", ["de", "NL", "", "nl-NL"])
def test_other_languages_are_refused(language: str) -> None:
    with pytest.raises(ValueError, match="use one of nl, en"):
        texts_for(language)
