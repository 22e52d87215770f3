"""Quarters: the `YYYYQn` spelling, clear errors for anything else, Dutch-time boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ere.core.quarters import DUTCH_TIME, Quarter, QuarterFormatError, local_date

UTC = UTC


def test_parse_and_print_round_trip() -> None:
    quarter = Quarter.parse("2026Q3")
    assert (quarter.year, quarter.number) == (2026, 3)
    assert str(quarter) == "2026Q3"


@pytest.mark.parametrize(
    ("text", "explanation"),
    [
        ("2026Q5", "a year has quarters 1 to 4, got '5'"),
        ("2026Q0", "a year has quarters 1 to 4, got '0'"),
        ("2026Q10", "a year has quarters 1 to 4, got '10'"),
        ("2026-Q3", "write it as '2026Q3'"),
        ("2026 Q3", "write it as '2026Q3'"),
        ("2026q3", "write it as '2026Q3' (upper-case Q"),
        ("26Q1", "the year must have four digits (1000-9999), got '26'"),
        ("02026Q1", "the year must have four digits"),
        (" 2026Q3", "remove the surrounding spaces"),
        ("2026Q", "expected a four-digit year, 'Q' and a quarter number"),
        ("Q3-2026", "expected a four-digit year, 'Q' and a quarter number"),
        ("", "expected a four-digit year"),
    ],
)
def test_bad_quarter_strings_say_what_is_wrong(text: str, explanation: str) -> None:
    with pytest.raises(QuarterFormatError) as caught:
        Quarter.parse(text)
    message = str(caught.value)
    assert message.startswith(f"{text!r} is not a quarter: ")
    assert explanation in message


def test_quarter_errors_are_value_errors_and_non_text_is_a_type_error() -> None:
    assert issubclass(QuarterFormatError, ValueError)
    with pytest.raises(TypeError, match="as text"):
        Quarter.parse(20263)  # type: ignore[arg-type]
    with pytest.raises(QuarterFormatError, match="quarter number must be 1 to 4, got 5"):
        Quarter(2026, 5)


def test_boundaries_are_midnight_dutch_time() -> None:
    q3 = Quarter.parse("2026Q3")
    # Summer time: 1 July 00:00 in Amsterdam is 30 June 22:00 UTC.
    assert q3.start == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
    assert q3.end == datetime(2026, 9, 30, 22, 0, tzinfo=UTC)
    # Winter time: 1 January 00:00 in Amsterdam is 31 December 23:00 UTC.
    assert Quarter.parse("2027Q1").start == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert (q3.first_day.isoformat(), q3.last_day.isoformat()) == ("2026-07-01", "2026-09-30")
    assert Quarter.parse("2024Q1").last_day.isoformat() == "2024-03-31"


def test_instants_at_the_boundary_belong_to_the_new_quarter() -> None:
    q2, q3 = Quarter.parse("2026Q2"), Quarter.parse("2026Q3")
    boundary = datetime(2026, 6, 30, 22, 0, tzinfo=UTC)
    assert Quarter.containing(boundary) == q3
    assert q3.contains(boundary) and not q2.contains(boundary)
    last_second = boundary - timedelta(seconds=1)
    assert Quarter.containing(last_second) == q2
    # The UTC date says 30 June, the Dutch date 1 July: Dutch time decides.
    assert Quarter.containing(datetime(2026, 6, 30, 23, 30, tzinfo=UTC)) == q3


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        Quarter.containing(datetime(2026, 7, 1, 12, 0))
    with pytest.raises(ValueError, match="has no time zone"):
        Quarter.parse("2026Q3").contains(datetime(2026, 7, 1, 12, 0))


def test_next_and_previous_cross_years() -> None:
    assert Quarter.parse("2026Q4").next() == Quarter.parse("2027Q1")
    assert Quarter.parse("2027Q1").previous() == Quarter.parse("2026Q4")
    assert Quarter.parse("2026Q2") < Quarter.parse("2026Q3") < Quarter.parse("2027Q1")


quarters = st.builds(Quarter, st.integers(2000, 2200), st.integers(1, 4))
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
)


@given(quarters)
def test_property_text_round_trip_and_neighbours(quarter: Quarter) -> None:
    assert Quarter.parse(str(quarter)) == quarter
    assert quarter.next().previous() == quarter
    assert quarter.end == quarter.next().start
    assert quarter.start < quarter.end


@given(instants)
def test_property_every_instant_is_in_exactly_one_quarter(instant: datetime) -> None:
    quarter = Quarter.containing(instant)
    assert quarter.contains(instant)
    assert not quarter.next().contains(instant)
    assert not quarter.previous().contains(instant)
    assert quarter.first_day <= local_date(instant) <= quarter.last_day
    assert local_date(instant) == instant.astimezone(DUTCH_TIME).date()
