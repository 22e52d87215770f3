"""The dashboard's forms read into the partner API's models, a customer's enrolment state, the
payouts CSV's cells and the log-in lockout by address, without a server."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from proxy.api.dashboard.address_lockout import FAILURES, REFILL_SECONDS, AddressLockout
from proxy.api.dashboard.enrolment_state import enrolment_state
from proxy.api.dashboard.forms import FormErrors, enrolment_body, form_key, scan_body
from proxy.api.dashboard.statement_pages import spreadsheet_safe

NOW = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
FORM = {
    "name": " Anna ",
    "email": "anna@example.nl",
    "address": "Kerkstraat 1",
    "postcode": "1234 AB",
    "city": "Utrecht",
    "ean": "871687120000000004",
    "grid_operator": "Stedin",
    "iban": "",
    "consent_text_version": "v3",
    "consent_reference": "form-17",
    "consent_at": "2026-05-03T18:30",
    "consent_given": "yes",
}


def test_an_enrolment_form_becomes_the_apis_request():
    body = enrolment_body(FORM, NOW)
    assert body.name == "Anna" and body.iban is None and body.language is None
    assert body.consent.accepted_at == "2026-05-03T18:30:00+02:00"  # Dutch summer time
    now = enrolment_body(FORM | {"consent_at": "", "language": "en"}, NOW)
    assert now.consent.accepted_at == "2026-05-04T10:00:00+02:00" and now.language == "en"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"consent_given": None}, "consent_given"),
        ({"name": "  "}, "name"),
        ({"consent_reference": ""}, "consent.user_reference"),
        ({"consent_at": "yesterday"}, "consent.accepted_at"),
        ({"language": "de"}, "language"),
        ({"name": ["two", "values"]}, "name"),
    ],
)
def test_a_bad_enrolment_form_names_the_field(change, field):
    form = {k: v for k, v in (FORM | change).items() if v is not None}
    with pytest.raises(FormErrors) as refused:
        enrolment_body(form, NOW)
    assert field in refused.value.errors


def test_only_the_dashboards_own_form_keys_are_taken():
    assert form_key({"idem": "dash-" + "a1" * 16}) == "dash-" + "a1" * 16
    for bad in (None, "", "dash-xyz", "other-key", "dash-" + "A1" * 16):
        with pytest.raises(FormErrors):
            form_key({"idem": bad})


def test_a_scan_form_lists_its_lines_and_the_partners_chargers_once():
    body = scan_body("CP-1, Iskra WM3M4, SN-1, 3000\n\n,ABB B23, ,\nCP-2", ["CP-2", "CP-3"])
    chargers = [c.model_dump(exclude_none=True) for c in body.chargers]
    assert chargers == [
        {"identity": "CP-1", "meter_type": "Iskra WM3M4", "meter_serial": "SN-1",
         "declared_kwh_per_year": 3000},
        {"meter_type": "ABB B23"},
        {"identity": "CP-2"},
        {"identity": "CP-3"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text", ["", "\n ,,, \n", "CP-1,a,b,c,d", "CP-1,,,3.5", "CP-1,,,-4", "x" * 1001]
)
def test_a_bad_scan_form_is_refused(text):
    with pytest.raises(FormErrors) as refused:
        scan_body(text, [])
    assert "portfolio" in refused.value.errors


def _mandate(year, start, end, revoked=None):
    return {
        "year": year,
        "valid_from": start,
        "valid_until": end,
        "revoked_at": None if revoked is None else NOW,
        "revoked_effective": revoked,
    }


@pytest.mark.parametrize(
    ("mandates", "state", "text"),
    [
        ([], "none", "No mandate for 2026"),
        ([_mandate(2025, date(2025, 1, 1), date(2025, 12, 31))], "none", "No mandate for 2026"),
        ([_mandate(2026, date(2026, 3, 1), date(2026, 12, 31))], "enrolled", "Enrolled for 2026"),
        ([_mandate(2026, date(2026, 6, 1), date(2026, 12, 31))], "starting", "Enrolled from 2026-06-01"),
        ([_mandate(2026, date(2026, 1, 1), date(2026, 12, 31), date(2026, 6, 30))], "ending", "Ending 2026-06-30"),
        ([_mandate(2026, date(2026, 1, 1), date(2026, 12, 31), date(2026, 4, 30))], "ended", "Ended 2026-04-30"),
    ],
)  # fmt: skip
def test_the_enrolment_state_on_a_day(mandates, state, text):
    found = enrolment_state(mandates, date(2026, 5, 4))
    assert (found.state, found.text, found.next_year) == (state, text, False)


def test_next_years_mandate_is_mentioned():
    mandates = [_mandate(y, date(y, 1, 1), date(y, 12, 31)) for y in (2026, 2027)]
    assert enrolment_state(mandates, date(2026, 12, 1)).next_year


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+31 6", "'+31 6"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("Anna", "Anna"),
        (None, ""),
        (2, "2"),
    ],
)
def test_csv_cells_never_run_as_formulas(value, cell):
    assert spreadsheet_safe(value) == cell


def test_an_address_is_locked_out_after_its_failures_and_let_in_again_slowly():
    now = [0.0]
    lockout = AddressLockout(lambda: now[0])
    for _ in range(FAILURES):
        assert lockout.retry_after("203.0.113.7") == 0
        lockout.failed("203.0.113.7")
    assert lockout.retry_after("203.0.113.7") == REFILL_SECONDS
    assert lockout.retry_after("198.51.100.1") == 0
    now[0] += REFILL_SECONDS
    assert lockout.retry_after("203.0.113.7") == 0
    lockout.failed("203.0.113.7")
    assert lockout.retry_after("203.0.113.7") > 0
