"""The stored shape's fast paths print what their reference definitions print."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from proxy.capture.stored_shape import _canonical_uuid, canonical_time


@given(st.datetimes(timezones=st.just(UTC)))
@example(datetime(1000, 1, 1, tzinfo=UTC))
@example(datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC))
@example(datetime(2026, 12, 7, 14, 0, 0, 1, tzinfo=UTC))
def test_canonical_time_is_the_utc_timestamp_text_of_a_whole_second(at: datetime) -> None:
    expected = (
        None if at.microsecond or not 1000 <= at.year <= 9999 else at.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    assert canonical_time(at) == expected


def _reference(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


@given(
    st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: f"{{{u}}}"),
        st.uuids().map(lambda u: f"urn:uuid:{u}"),
        st.uuids().map(lambda u: f"{u}\n"),
        st.text(alphabet="0123456789abcdefABCDEF-{}", max_size=40),
        st.text(max_size=40),
    )
)
def test_a_uuid_is_canonical_exactly_when_the_uuid_column_prints_it_back(text: str) -> None:
    assert _canonical_uuid(text) == _reference(text)
