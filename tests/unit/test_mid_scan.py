"""The MID scan of one charger: each verdict and reason from the facts that decide it, the kWh
basis and the estimate computed by hand, totals, refused inputs, and a property: any facts give
one verdict, a reason and a non-negative estimate of kWh × price to the cent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.capture.evidence import load_mid_meters
from proxy.ere.core.mid_scan import (
    ChargerVerdict,
    Declared,
    KwhBasis,
    Observed,
    ScanReason,
    Verdict,
    scan,
    total,
)

D = Decimal
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
YEAR_AGO = NOW - timedelta(days=365)
PRICE = D("0.10")
MID = load_mid_meters()
LISTED = "Iskra WM3M4C"  # on the shipped list
UNLISTED = "Eastron SDM630"  # the non-MID spelling: deliberately absent


def run(declared: Declared, observed: Observed | None, price: Decimal = PRICE) -> ChargerVerdict:
    return scan(declared, observed, as_of=NOW, price_per_kwh=price, mid_meters=MID)


def seen(**facts) -> Observed:
    return Observed(since=facts.pop("since", YEAR_AGO), **facts)


@pytest.mark.parametrize(
    ("declared", "observed", "verdict", "reason"),
    [
        # Signed readings decide first: a failing one asks for a check, even beside verified ones.
        (Declared(), seen(verified_sessions=4), Verdict.QUALIFIES, ScanReason.SIGNED_VERIFIED),
        (
            Declared(),
            seen(verified_sessions=4, unverified_sessions=1),
            Verdict.NEEDS_CHECK,
            ScanReason.SIGNED_UNVERIFIED,
        ),
        (
            Declared(meter_type=UNLISTED),
            seen(unverified_sessions=1),
            Verdict.NEEDS_CHECK,
            ScanReason.SIGNED_UNVERIFIED,
        ),
        # Signed verified beats a boot that names no MID meter.
        (
            Declared(),
            seen(verified_sessions=1, meter_type=UNLISTED),
            Verdict.QUALIFIES,
            ScanReason.SIGNED_VERIFIED,
        ),
        # The charger's own boot facts.
        (
            Declared(),
            seen(meter_type=LISTED, meter_serial="S-1"),
            Verdict.NEEDS_CHECK,
            ScanReason.CHARGER_DECLARED_MID_METER,
        ),
        (
            Declared(),
            seen(meter_type=LISTED),
            Verdict.DOES_NOT_QUALIFY,
            ScanReason.METER_SERIAL_MISSING,
        ),
        (
            Declared(),
            seen(meter_type=UNLISTED, meter_serial="S-1"),
            Verdict.DOES_NOT_QUALIFY,
            ScanReason.METER_NOT_LISTED,
        ),
        # The charger's report wins over the partner's declaration.
        (
            Declared(meter_type=LISTED),
            seen(meter_type=UNLISTED, meter_serial="S-1"),
            Verdict.DOES_NOT_QUALIFY,
            ScanReason.METER_NOT_LISTED,
        ),
        # A charger that names no meter: the partner's declaration counts.
        (
            Declared(meter_type=LISTED),
            seen(),
            Verdict.NEEDS_CHECK,
            ScanReason.PARTNER_DECLARED_MID_METER,
        ),
        (Declared(), seen(), Verdict.DOES_NOT_QUALIFY, ScanReason.NO_METER_FACTS),
        # Not seen: the declaration, or nothing.
        (
            Declared(identity="CP-9", meter_type=LISTED, meter_serial="S-2"),
            None,
            Verdict.NEEDS_CHECK,
            ScanReason.PARTNER_DECLARED_MID_METER,
        ),
        (
            Declared(meter_type="iskra wm3m4-c"),  # case and punctuation do not matter
            None,
            Verdict.NEEDS_CHECK,
            ScanReason.PARTNER_DECLARED_MID_METER,
        ),
        (
            Declared(meter_type="Eastron SDM630 MID"),
            None,
            Verdict.NEEDS_CHECK,
            ScanReason.PARTNER_DECLARED_MID_METER,
        ),
        (
            Declared(meter_type=UNLISTED),
            None,
            Verdict.DOES_NOT_QUALIFY,
            ScanReason.METER_NOT_LISTED,
        ),
        (Declared(identity="CP-9"), None, Verdict.DOES_NOT_QUALIFY, ScanReason.NOT_SEEN),
        (Declared(), None, Verdict.DOES_NOT_QUALIFY, ScanReason.NO_METER_FACTS),
    ],
)
def test_each_verdict_and_reason(declared, observed, verdict, reason):
    result = run(declared, observed)
    assert (result.verdict, result.reason) == (verdict, reason)
    assert result.text


def test_reasons_say_what_was_seen_and_what_would_change_it():
    declared = run(Declared(meter_type=LISTED, meter_serial="S-2"), None).text
    assert "'Iskra WM3M4C'" in declared and "'S-2'" in declared and "Iskra" in declared
    assert "not yet verified" in declared
    booted = run(Declared(), seen(meter_type=LISTED, meter_serial="S-1")).text
    assert "declared MID evidence" in booted and "certificate" in booted
    unlisted = run(Declared(meter_type=UNLISTED), None).text
    assert "not on the MID meter list" in unlisted and "signed OCMF" in unlisted
    assert "'CP-9'" in run(Declared(identity="CP-9"), None).text
    assert (
        "1 other session(s) verified"
        in run(Declared(), seen(verified_sessions=1, unverified_sessions=2)).text
    )


@pytest.mark.parametrize(
    ("observed", "declared_kwh", "basis", "kwh", "eur"),
    [
        # A whole year seen: its kWh as they are. 2 345.678 kWh × €0.10 = €234.5678 → €234.57.
        (seen(energy_wh=D(2_345_678)), None, KwhBasis.OBSERVED, "2345.678", "234.57"),
        # 100 days: × 365 / 100. 500 kWh → 1825 kWh → €182.50; the declaration is not used.
        (
            seen(since=NOW - timedelta(days=100, hours=3), energy_wh=D(500_000)),
            D(9000),
            KwhBasis.OBSERVED_ANNUALISED,
            "1825.000",
            "182.50",
        ),
        # 30 days is enough: 100.0005 kWh × 365 / 30 = 1216.672750 → 1216.673 kWh → €121.67.
        (
            seen(since=NOW - timedelta(days=30), energy_wh=D("100000.5")),
            None,
            KwhBasis.OBSERVED_ANNUALISED,
            "1216.673",
            "121.67",
        ),
        # 29 days is not: the declaration, else nothing.
        (
            seen(since=NOW - timedelta(days=29), energy_wh=D(500_000)),
            D(2500),
            KwhBasis.DECLARED,
            "2500.000",
            "250.00",
        ),
        (seen(since=NOW - timedelta(days=29)), None, KwhBasis.NONE, "0.000", "0.00"),
        (None, D(3333), KwhBasis.DECLARED, "3333.000", "333.30"),
        (None, None, KwhBasis.NONE, "0.000", "0.00"),
        # A charger that fed back more than it took counts 0, not a negative estimate.
        (seen(energy_wh=D(-5000)), None, KwhBasis.OBSERVED, "0.000", "0.00"),
        # A window starting after now (a link from tomorrow) is 0 days.
        (seen(since=NOW + timedelta(days=1)), D(10), KwhBasis.DECLARED, "10.000", "1.00"),
    ],
)
def test_yearly_kwh_and_estimate(observed, declared_kwh, basis, kwh, eur):
    result = run(Declared(kwh_per_year=declared_kwh), observed)
    assert (result.kwh_basis, result.kwh_per_year, result.eur_per_year) == (basis, D(kwh), D(eur))
    assert str(result.kwh_per_year) == kwh and str(result.eur_per_year) == eur


def test_observed_figures_are_shown_exact():
    result = run(Declared(), seen(since=NOW - timedelta(days=45, minutes=1), energy_wh=D(10_000)))
    assert (str(result.observed_kwh), result.observed_days) == ("10.000", 45)
    assert str(run(Declared(), seen(energy_wh=D("1234.5"))).observed_kwh) == "1.2345"
    unseen = run(Declared(kwh_per_year=D(1)), None)
    assert (unseen.observed_kwh, unseen.observed_days) == (None, None)


def test_the_price_rounds_half_up_to_the_cent():
    # 1 005 kWh × €0.0125 = €12.5625 → €12.56; 2 kWh × €0.0025 = €0.005 → €0.01.
    assert run(Declared(kwh_per_year=D(1005)), None, D("0.0125")).eur_per_year == D("12.56")
    assert run(Declared(kwh_per_year=D(2)), None, D("0.0025")).eur_per_year == D("0.01")
    assert run(Declared(kwh_per_year=D(2)), None, D(0)).eur_per_year == D("0.00")


def test_totals_per_verdict():
    results = [
        run(Declared(), seen(verified_sessions=1, energy_wh=D(1_000_000))),  # 1000 kWh, €100
        run(Declared(kwh_per_year=D(2000), meter_type=LISTED), None),  # needs a check, €200
        run(Declared(kwh_per_year=D(1500), meter_type=LISTED), None),  # needs a check, €150
        run(Declared(identity="CP-X"), None),
    ]
    totals = total(results)
    assert totals.chargers == 4
    assert [(t.chargers, t.kwh_per_year, t.eur_per_year) for t in totals.by_verdict.values()] == [
        (1, D(1000), D(100)),
        (2, D(3500), D(350)),
        (1, D(0), D(0)),
    ]
    assert list(totals.by_verdict) == list(Verdict)
    empty = total([])
    assert empty.chargers == 0 and all(t.chargers == 0 for t in empty.by_verdict.values())


@pytest.mark.parametrize(
    "make",
    [
        lambda: Declared(kwh_per_year=D(-1)),
        lambda: Declared(kwh_per_year=1.5),
        lambda: Declared(kwh_per_year=D("NaN")),
        lambda: Observed(since=datetime(2026, 1, 1)),
        lambda: Observed(since=YEAR_AGO, energy_wh=12.5),
        lambda: Observed(since=YEAR_AGO, verified_sessions=-1),
        lambda: run(Declared(), None, D("-0.01")),
        lambda: run(Declared(), None, 0.1),
        lambda: scan(
            Declared(), None, as_of=datetime(2026, 1, 1), price_per_kwh=PRICE, mid_meters=MID
        ),
    ],
)
def test_inconsistent_inputs_are_the_callers_error(make):
    with pytest.raises((TypeError, ValueError)):
        make()


TEXT = st.one_of(st.none(), st.text(max_size=120), st.sampled_from([LISTED, UNLISTED, "EM340 PF"]))
KWH = st.one_of(st.none(), st.integers(0, 1_000_000).map(Decimal))
OBSERVED = st.one_of(
    st.none(),
    st.builds(
        Observed,
        since=st.datetimes(
            min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
        ),
        meter_type=TEXT,
        meter_serial=TEXT,
        verified_sessions=st.integers(0, 10_000),
        unverified_sessions=st.integers(0, 3),
        energy_wh=st.decimals(-(10**9), 10**10, places=3, allow_nan=False, allow_infinity=False),
    ),
)


@given(
    declared=st.builds(
        Declared, identity=TEXT, meter_type=TEXT, meter_serial=TEXT, kwh_per_year=KWH
    ),
    observed=OBSERVED,
    price=st.decimals(0, 10, places=4, allow_nan=False, allow_infinity=False),
)
def test_any_facts_give_one_verdict_and_a_non_negative_estimate(declared, observed, price):
    result = run(declared, observed, price)
    assert result.verdict in Verdict and result.reason in ScanReason and result.text
    assert result.kwh_per_year >= 0 and result.eur_per_year >= 0
    assert result.kwh_per_year == result.kwh_per_year.quantize(D("0.001"))
    assert result.eur_per_year == (result.kwh_per_year * price).quantize(D("0.01"), "ROUND_HALF_UP")
    if result.kwh_basis == KwhBasis.NONE:
        assert result.kwh_per_year == 0
    # Only verified signed readings, and none that fail, make a charger qualify.
    signed = observed is not None and observed.verified_sessions > 0
    clean = observed is not None and observed.unverified_sessions == 0
    assert (result.verdict == Verdict.QUALIFIES) == (signed and clean)
