"""Ending a customer, sans-IO: which mandates are revoked from which day, and what is refused."""

from __future__ import annotations

from datetime import date

import pytest

from proxy.ere.admin.customer_end import CustomerEnd, EndRefused, MandateCover, revocations
from proxy.ere.admin.validation import AdminInputError

THIS = MandateCover(2026, date(2026, 3, 5), date(2026, 12, 31), None)
NEXT = MandateCover(2027, date(2027, 1, 1), date(2027, 12, 31), None)
PAST = MandateCover(2025, date(2025, 1, 1), date(2025, 12, 31), None)


def test_every_mandate_covering_a_later_day_is_revoked():
    assert revocations([PAST, THIS, NEXT], date(2026, 8, 15)) == [
        (2026, date(2026, 8, 15)),
        (2027, date(2026, 12, 31)),  # the day before it starts: it covers nothing
    ]
    # A last day before validity starts: the mandate covers nothing either.
    assert revocations([THIS], date(2026, 1, 10)) == [(2026, date(2026, 3, 4))]
    assert revocations([THIS, NEXT], date(2026, 12, 31)) == [(2027, date(2026, 12, 31))]


def test_an_end_is_refused_when_nothing_covers_later_or_a_revocation_covers_longer():
    revoked = MandateCover(2026, date(2026, 3, 5), date(2026, 12, 31), date(2026, 8, 15))
    for last_day in (date(2026, 8, 15), date(2026, 9, 1)):
        with pytest.raises(EndRefused, match="ended from then already"):
            revocations([PAST, revoked], last_day)
    with pytest.raises(EndRefused, match="revoked once"):
        revocations([revoked, NEXT], date(2026, 8, 1))
    nothing = MandateCover(2026, date(2026, 3, 5), date(2026, 12, 31), date(2026, 3, 4))
    assert revocations([nothing, NEXT], date(2026, 3, 1)) == [(2027, date(2026, 12, 31))]
    with pytest.raises(EndRefused):
        revocations([], date(2026, 3, 1))


@pytest.mark.parametrize(
    ("last_day", "reason", "reference", "field"),
    [
        ("2026-02-30", "moved", None, "--effective"),
        ("9999-12-31", "moved", None, "--effective"),
        ("26-08-15", "moved", None, "--effective"),
        ("2026-08-15", " ", None, "--reason"),
        ("2026-08-15", "x" * 501, None, "--reason"),
        ("2026-08-15", "moved", "a\u200bb", "--reference"),
    ],
)
def test_an_ends_fields_are_checked(last_day, reason, reference, field):
    with pytest.raises(AdminInputError, match=f"^{field}:"):
        CustomerEnd.checked("cus_1", last_day, reason, reference)
    assert CustomerEnd.checked("cus_1", "2026-08-15", "moved", None).last_day == date(2026, 8, 15)
