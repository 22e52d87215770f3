"""The dashboard's bar charts and brand colours, without a server: geometry that fits its box and
shows every value, exact data behind the picture, and brand colours that stay readable."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proxy.api.dashboard.brand_style import (
    TEXT_CONTRAST,
    brand_css,
    contrast,
    on_white,
    readable_ink,
)
from proxy.api.dashboard.charts import bar_chart, nice_ceiling, series_json

D = Decimal


def test_bars_are_scaled_to_a_round_top_and_labelled_in_order():
    chart = bar_chart([("2026-04", D(0)), ("2026-05", D(30)), ("2026-06", D("12.5"))])
    assert [bar.label for bar in chart.bars] == ["2026-04", "2026-05", "2026-06"]
    assert [tick for tick, _ in chart.ticks] == ["0", "10", "20", "30", "40", "50"]
    empty, full, part = chart.bars
    assert empty.height == 0 and empty.y == chart.bottom
    assert full.height == pytest.approx((chart.bottom - chart.ticks[-1][1]) * 30 / 50)
    assert part.height == pytest.approx(full.height * 12.5 / 30)


@given(st.lists(st.decimals(min_value=-1000, max_value=10**7, places=3), max_size=24))
@example([D("24.750"), D("100.001")])  # its top and height rounded apart ended 0.01 below
def test_every_bar_stays_inside_the_box(values):
    chart = bar_chart([(str(n), value) for n, value in enumerate(values)], width=400, height=200)
    for bar in chart.bars:
        assert chart.left <= bar.x and bar.x + bar.width <= chart.width
        assert 0 <= bar.y <= chart.bottom and bar.height >= 0
        assert bar.y + bar.height == pytest.approx(chart.bottom)


@pytest.mark.parametrize(
    ("value", "top"),
    [
        (D(0), D(1)),
        (D(-3), D(1)),
        (D("0.3"), D("0.5")),
        (D(9.98), D(10)),
        (D(30), D(50)),
        (D(101), D(200)),
        (D(240), D(250)),
    ],
)
def test_the_top_of_the_scale_is_a_round_number_at_or_above_the_largest(value, top):
    assert nice_ceiling(value) == top


@pytest.mark.parametrize(
    ("largest", "ticks"),
    [
        (D("0.8"), ["0", "0.2", "0.4", "0.6", "0.8", "1"]),
        (D("1.5"), ["0", "0.5", "1", "1.5", "2"]),
        (D("2.39"), ["0", "0.5", "1", "1.5", "2", "2.5"]),
        (D("9.98"), ["0", "2", "4", "6", "8", "10"]),
        (D(120), ["0", "50", "100", "150", "200"]),
    ],
)
def test_the_gridlines_fall_on_round_values(largest, ticks):
    assert [tick for tick, _ in bar_chart([("a", largest)]).ticks] == ticks


def test_the_series_is_kept_exact_as_decimal_strings():
    assert json.loads(series_json([("a", D("2.390")), ("b", None)])) == [
        ["a", "2.390"],
        ["b", None],
    ]


@given(st.integers(min_value=0, max_value=0xFFFFFF))
def test_any_brand_colour_gets_readable_ink_and_readable_text(number):
    colour = f"#{number:06x}"
    assert contrast(colour, readable_ink(colour)) >= TEXT_CONTRAST
    assert contrast(on_white(colour), "#ffffff") >= TEXT_CONTRAST


def test_the_style_sheet_names_the_colours_and_refuses_anything_else():
    css = brand_css("#1F6F5C")
    assert "--brand: #1f6f5c;" in css and "--brand-ink: #ffffff;" in css
    assert "--brand-text: #1f6f5c;" in css  # dark enough already
    assert "--brand-text: #ffffff" not in brand_css("#ffffff")
    with pytest.raises(ValueError):
        brand_css("red; } body { display: none")
