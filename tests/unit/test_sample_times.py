"""`proxy.capture.sessions.parse_timestamp`: a charger's timestamp text as a UTC time, or the
reception time when it cannot be one; asked again, the same answer (it is remembered)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.capture.sessions import parse_timestamp

RECEIVED = 1_767_261_600.25  # 2026-01-01T10:00:00.25Z
AT_RECEPTION = datetime(2026, 1, 1, 10, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T09:59:58Z", datetime(2026, 1, 1, 9, 59, 58, tzinfo=UTC)),
        ("2026-01-01T09:59:58.5z", datetime(2026, 1, 1, 9, 59, 58, 500000, tzinfo=UTC)),
        ("2026-01-01T11:59:58+02:00", datetime(2026, 1, 1, 9, 59, 58, tzinfo=UTC)),
        ("2026-01-01T09:59:58", datetime(2026, 1, 1, 9, 59, 58, tzinfo=UTC)),  # no offset: UTC
        ("yesterday", AT_RECEPTION),
        ("", AT_RECEPTION),
        (None, AT_RECEPTION),
        ("0001-01-01T00:00:00+01:00", AT_RECEPTION),  # before year 1 in UTC
        ("9999-12-31T23:00:00-02:00", AT_RECEPTION),  # after year 9999 in UTC
    ],
)
def test_a_timestamp_is_read_as_utc_or_falls_back_to_reception(
    text: str | None, expected: datetime
) -> None:
    for _ in range(2):  # the second answer comes from memory
        got = parse_timestamp(text, RECEIVED)
        assert got == expected
        assert got.utcoffset() == timedelta(0)


def test_the_same_text_with_another_reception_time_still_reads_the_text() -> None:
    text = "2026-01-01T09:59:58+00:00"
    assert parse_timestamp(text, RECEIVED) == parse_timestamp(text, RECEIVED + 60)
    assert parse_timestamp("bad", RECEIVED + 60) == AT_RECEPTION + timedelta(seconds=60)
    assert parse_timestamp(text, RECEIVED).tzinfo is UTC
