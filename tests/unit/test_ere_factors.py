"""ERE factors and prices as data: the shipped table, the formula, rounding and table errors."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ere.core.factors import (
    FactorTable,
    FactorTableError,
    MissingFactorError,
    QuarterPrice,
    YearFactors,
    ere,
    load_factor_table,
    parse_factor_table,
)
from proxy.ere.core.quarters import Quarter

D = Decimal
SHIPPED = load_factor_table()
Y2026 = SHIPPED.for_year(2026)


def test_golden_42_37_kwh_in_2026_is_14_10_ere() -> None:
    # 0.505 × 183 g/MJ × 3.6 MJ/kWh / 1000 = 0.332694 ERE per kWh
    # 42.37 kWh × 0.332694 = 14.09624478 ERE → 14.10 (0.01 ERE, half up)
    assert Y2026.ere_per_kwh == D("0.332694")
    assert ere(D("42.37"), Y2026) == D("14.10")
    assert str(ere(D("42.37"), Y2026)) == "14.10"


def test_rounding_is_half_up_at_the_hundredth() -> None:
    # Factors made to hit exact halves: 0.5 × 100 g/MJ × 0.1 MJ/kWh / 1000 = 0.005 ERE per kWh.
    halves = YearFactors(2030, D("0.5"), D("100"), D("0.1"))
    assert ere(D("1"), halves) == D("0.01")  # 0.005 → 0.01 (banker's rounding would give 0.00)
    assert ere(D("5"), halves) == D("0.03")  # 0.025 → 0.03 (banker's rounding would give 0.02)
    assert ere(D("0.9"), halves) == D("0.00")  # 0.0045 → 0.00
    assert ere(D("-1"), halves) == D("-0.01")  # corrections round symmetrically
    assert str(ere(D("-0.9"), halves)) == "0.00"  # never "-0.00"


def test_ere_refuses_floats() -> None:
    with pytest.raises(TypeError, match="kwh must be a Decimal, got float"):
        ere(42.37, Y2026)  # type: ignore[arg-type]


def test_shipped_table_marks_its_placeholders() -> None:
    assert Y2026.renewable_share == D("0.505")
    assert (Y2026.co2_g_per_mj, Y2026.mj_per_kwh) == (D("183"), D("3.6"))
    assert not Y2026.placeholder
    prices = [SHIPPED.price_for(Quarter(2026, n)) for n in range(1, 5)]
    assert all(price.placeholder for price in prices)
    # About €0.10 per kWh to the owner: €0.30 × 0.332694 ERE/kWh = €0.0998082 per kWh.
    assert all(price.eur_per_ere == D("0.30") for price in prices)


def test_missing_year_or_quarter_is_an_error_never_a_default() -> None:
    with pytest.raises(
        MissingFactorError, match=r"no ERE factors for delivery year 2025 \(the table has 2026\)"
    ):
        SHIPPED.for_year(2025)
    with pytest.raises(MissingFactorError, match="no market price for 2027Q1"):
        SHIPPED.price_for(Quarter(2027, 1))
    empty = FactorTable((), ())
    with pytest.raises(MissingFactorError, match="the table has none"):
        empty.for_year(2026)


TABLE = """
[[year]]
year = 2026
renewable_share = 0.505
co2_g_per_mj = 183
mj_per_kwh = 3.6

[[price]]
quarter = "2026Q3"
eur_per_ere = 0.31
"""


def test_numbers_are_read_as_exact_decimals() -> None:
    table = parse_factor_table(TABLE)
    assert table.for_year(2026).renewable_share == D("0.505")
    assert table.price_for(Quarter(2026, 3)).eur_per_ere == D("0.31")
    assert isinstance(table.price_for(Quarter(2026, 3)).eur_per_ere, Decimal)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TABLE + TABLE, "year 2026 appears twice"),
        (TABLE.replace("renewable_share", "renewable_shar"), "unknown keys"),
        (TABLE.replace("0.505", '"0.505"'), "renewable_share must be a number"),
        (TABLE.replace("0.505", "1.505"), r"renewable_share must be in \(0, 1\]"),
        (TABLE.replace("3.6", "0"), "must be positive"),
        (TABLE.replace("2026Q3", "2026Q5"), "'2026Q5' is not a quarter"),
        (TABLE.replace("0.31", "-0.31"), "must not be negative"),
        (TABLE.replace("year = 2026", 'year = "2026"'), "needs an integer year"),
        ("[[years]]\nyear = 2026\n", "unknown sections"),
        ("year = [", "not valid TOML"),
    ],
)
def test_bad_tables_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(FactorTableError, match=message):
        parse_factor_table(text, origin="test.toml")


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "factors.toml"
    path.write_text(TABLE.replace("3.6", "0"), encoding="utf-8")
    with pytest.raises(FactorTableError, match=f"^{re.escape(str(path))}: year 2026"):
        load_factor_table(path)


def test_typed_values_refuse_floats() -> None:
    with pytest.raises(FactorTableError, match="renewable_share must be a Decimal"):
        YearFactors(2026, 0.505, D(183), D("3.6"))  # type: ignore[arg-type]
    with pytest.raises(FactorTableError, match="eur_per_ere must be a Decimal"):
        QuarterPrice(Quarter(2026, 3), 0.3)  # type: ignore[arg-type]


kwh_values = st.decimals(min_value=D("-100000"), max_value=D("100000"), places=4, allow_nan=False)


@given(kwh_values)
def test_property_one_rounding_within_half_a_hundredth(kwh: Decimal) -> None:
    credits = ere(kwh, Y2026)
    assert abs(credits - kwh * D("0.332694")) <= D("0.005")
    assert credits.as_tuple().exponent == -2
    assert ere(-kwh, Y2026) == -credits


@given(kwh_values, kwh_values)
def test_property_more_energy_never_fewer_credits(a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert ere(low, Y2026) <= ere(high, Y2026)
