"""The quarterly close: golden statements computed by hand, the quarter-boundary rule,
adjustments after a close, and properties that hold for any set of sessions."""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.ere.core.ean import Ean
from proxy.ere.core.eligibility import (
    Assessment,
    ChargerLink,
    Eligibility,
    Mandate,
    Reason,
    SessionContext,
    SessionRecord,
    assess,
)
from proxy.ere.core.factors import MissingFactorError, parse_factor_table
from proxy.ere.core.fees import FEE_FLOOR_RATE, FeePlan
from proxy.ere.core.quarters import DUTCH_TIME, Quarter
from proxy.ere.core.rounding import to_cents
from proxy.ere.core.statements import (
    CloseError,
    LineKind,
    QuarterStatement,
    SessionShare,
    StatementLine,
    Totals,
    close_quarter,
    delivery_quarter,
)

D = Decimal
UTC = UTC
Q2, Q3, Q4 = Quarter(2026, 2), Quarter(2026, 3), Quarter(2026, 4)
Q1_2027 = Quarter(2027, 1)

# Prices differ per quarter so a test can tell which quarter's price was used. The 2027 share
# is made up for these tests (the real one is not in the shipped table).
FACTORS_TEXT = """
[[year]]
year = 2026
renewable_share = 0.505
co2_g_per_mj = 183
mj_per_kwh = 3.6

[[year]]
year = 2027
renewable_share = 0.55
co2_g_per_mj = 183
mj_per_kwh = 3.6
placeholder = true

[[price]]
quarter = "2026Q2"
eur_per_ere = 0.30

[[price]]
quarter = "2026Q3"
eur_per_ere = 0.30

[[price]]
quarter = "2026Q4"
eur_per_ere = 0.32

[[price]]
quarter = "2027Q1"
eur_per_ere = 0.32
"""
FACTORS = parse_factor_table(FACTORS_TEXT)

EAN_A = Ean("871687120000000004")
EAN_B = Ean("871687120000000011")
EAN_C = Ean("871687120000000028")
PLANS = {"cust-b": FeePlan().with_referral(D("0.05"))}  # B: 20 % − 5 % referral = 15 %


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=DUTCH_TIME)


# --- the golden quarter, from session records through eligibility to the statement ----------


def session(
    session_id: int, charger: str, start: datetime, end: datetime | None, wh: int, **changes: Any
) -> SessionRecord:
    fields: dict[str, Any] = {
        "session_id": session_id,
        "identity": charger,
        "transaction_id": f"tx-{session_id}",
        "connector_id": 1,
        "started_at": start,
        "stopped_at": end,
        "meter_start_wh": D(0),
        "meter_stop_wh": D(wh) if end is not None else None,
        "last_reading_at": None,
        "last_reading_wh": None,
        "energy_wh": D(wh),
        "meter_class": "declared",
        "status": "completed" if end is not None else "active",
    }
    fields.update(changes)
    return SessionRecord(**fields)


CHARGERS = {
    "CP-A": (ChargerLink("cust-a", EAN_A), D(11000)),
    "CP-B": (ChargerLink("cust-b", EAN_B), D(22000)),
    "CP-C": (ChargerLink("cust-c", EAN_C), D(11000)),
}
MANDATES = {
    "CP-A": (Mandate("cust-a", EAN_A, date(2026, 1, 1), date(2026, 12, 31)),),
    "CP-B": (Mandate("cust-b", EAN_B, date(2026, 1, 1), date(2026, 12, 31)),),
    # C signed in the middle of Q3: sessions before 15 August do not count.
    "CP-C": (Mandate("cust-c", EAN_C, date(2026, 8, 15), date(2026, 12, 31)),),
}


def assess_all(
    records: list[SessionRecord], mandates: Mapping[str, tuple[Mandate, ...]]
) -> list[Assessment]:
    results = []
    for record in records:
        link, max_power = CHARGERS[record.identity]
        same_connector = tuple(r for r in records if r.identity == record.identity)
        around = SessionContext(link, max_power, mandates[record.identity], same_connector)
        results.append(assess(record, around))
    return results


Q3_RECORDS = [
    session(1, "CP-A", local(2026, 7, 5, 18), local(2026, 7, 5, 20), 10_000),
    session(2, "CP-A", local(2026, 8, 10, 18), local(2026, 8, 10, 21), 20_500),
    session(3, "CP-A", local(2026, 9, 12, 18), local(2026, 9, 12, 20), 11_870),
    session(
        4, "CP-A", local(2026, 9, 13, 18), local(2026, 9, 13, 20), 5_000, meter_class="unknown"
    ),
    # Crosses into Q4 and ends there: counts in Q4.
    session(5, "CP-A", local(2026, 9, 30, 23, 30), local(2026, 10, 1, 0, 30), 5_500),
    session(6, "CP-A", local(2026, 9, 29, 8), None, 1_000),  # still running at the close
    session(11, "CP-B", local(2026, 7, 20, 8), local(2026, 7, 20, 12), 60_000),
    session(
        12, "CP-B", local(2026, 8, 1, 8), local(2026, 8, 1, 12), 45_000, exported_wh=D(5_000)
    ),  # V2G
    session(21, "CP-C", local(2026, 8, 10, 8), local(2026, 8, 10, 12), 8_000),  # before C's mandate
    session(22, "CP-C", local(2026, 8, 20, 8), local(2026, 8, 20, 12), 30_000),
]


def figures(line: StatementLine) -> tuple[Decimal, ...]:
    return (
        line.kwh,
        line.ere,
        line.eur_per_ere,
        line.gross,
        line.fee_rate,
        line.fee,
        line.fee_vat,
        line.net,
    )


def close_q3() -> QuarterStatement:
    return close_quarter(Q3, assess_all(Q3_RECORDS, MANDATES), FACTORS, fee_plans=PLANS)


def test_golden_quarter_statement() -> None:
    statement = close_q3()
    assert statement.quarter == Q3
    assert statement.customers == ("cust-a", "cust-b", "cust-c")
    a, b, c = statement.lines
    assert {line.kind for line in statement.lines} == {LineKind.REGULAR}
    assert {line.delivery_quarter for line in statement.lines} == {Q3}

    # A: sessions 1, 2, 3 = 10.00 + 20.50 + 11.87 = 42.37 kWh (4 has no MID evidence, 5 ends in
    # Q4, 6 is still running). 42.37 × 0.332694 = 14.09624478 → 14.10 ERE;
    # gross 14.10 × €0.30 = €4.23; fee 20 % × 4.23 = 0.846 → €0.85;
    # VAT 0.85 × 21/121 = 0.14752 → €0.15; net 4.23 − 0.85 = €3.38.
    assert (a.customer_id, a.ean) == ("cust-a", EAN_A)
    assert figures(a) == (
        D("42.37"),
        D("14.10"),
        D("0.30"),
        D("4.23"),
        D("0.20"),
        D("0.85"),
        D("0.15"),
        D("3.38"),
    )
    assert a.sessions == (
        SessionShare(1, D("10")),
        SessionShare(2, D("20.5")),
        SessionShare(3, D("11.87")),
    )

    # B: 60 kWh + (45 − 5 fed back) = 100 kWh → 33.2694 → 33.27 ERE; gross 33.27 × 0.30 = 9.981 →
    # €9.98; fee 15 % = 1.497 → €1.50; VAT 1.50 × 21/121 = 0.26033 → €0.26; net €8.48.
    assert figures(b) == (
        D("100"),
        D("33.27"),
        D("0.30"),
        D("9.98"),
        D("0.15"),
        D("1.50"),
        D("0.26"),
        D("8.48"),
    )

    # C: only session 22 (20 August; 21 on 10 August predates the mandate of 15 August):
    # 30 kWh → 9.98082 → 9.98 ERE; gross 9.98 × 0.30 = 2.994 → €2.99; fee 20 % = 0.598 → €0.60;
    # VAT 0.60 × 21/121 = 0.10413 → €0.10; net €2.39.
    assert figures(c) == (
        D("30"),
        D("9.98"),
        D("0.30"),
        D("2.99"),
        D("0.20"),
        D("0.60"),
        D("0.10"),
        D("2.39"),
    )
    assert c.sessions == (SessionShare(22, D("30")),)

    # Totals: 14.10 + 33.27 + 9.98 = 57.35 ERE; gross 4.23 + 9.98 + 2.99 = €17.20
    # = fee (0.85 + 1.50 + 0.60 = €2.95) + net (3.38 + 8.48 + 2.39 = €14.25); VAT €0.51.
    assert statement.totals == Totals(
        D("172.37"), D("57.35"), D("17.20"), D("2.95"), D("0.51"), D("14.25")
    )
    assert statement.for_customer("cust-b") == (b,)
    assert statement.for_customer("nobody") == ()


def test_golden_reasons_of_the_sessions_left_out() -> None:
    reasons = {result.session_id: result.reason for result in assess_all(Q3_RECORDS, MANDATES)}
    assert reasons[4] is Reason.NO_MID_EVIDENCE
    assert reasons[6] is Reason.NOT_FINISHED
    assert reasons[21] is Reason.NO_VALID_MANDATE
    assert reasons[5] is Reason.ELIGIBLE  # eligible, but in Q4


def test_golden_adjustments_in_the_next_quarter() -> None:
    q3 = close_q3()
    q3_before = copy.deepcopy(q3)
    q4_records = [
        *(r for r in Q3_RECORDS if r.session_id != 12),
        # B's export register was read again: 8 kWh fed back instead of 5.
        session(
            12, "CP-B", local(2026, 8, 1, 8), local(2026, 8, 1, 12), 45_000, exported_wh=D(8_000)
        ),
        # A late session: it ended on 28 September but reached us in October.
        session(7, "CP-A", local(2026, 9, 28, 18), local(2026, 9, 28, 20), 7_630),
        session(8, "CP-A", local(2026, 11, 3, 18), local(2026, 11, 3, 20), 12_000),
    ]
    # C's mandate turns out to have started on 1 August: session 21 now counts.
    mandates = {
        **MANDATES,
        "CP-C": (Mandate("cust-c", EAN_C, date(2026, 8, 1), date(2026, 12, 31)),),
    }
    q4 = close_quarter(Q4, assess_all(q4_records, mandates), FACTORS, closed=[q3], fee_plans=PLANS)

    assert q3 == q3_before  # the closed quarter is not touched
    a_q3, a_q4, b_q3, c_q3 = q4.lines
    assert [(line.customer_id, line.delivery_quarter, line.kind) for line in q4.lines] == [
        ("cust-a", Q3, LineKind.ADJUSTMENT),
        ("cust-a", Q4, LineKind.REGULAR),
        ("cust-b", Q3, LineKind.ADJUSTMENT),
        ("cust-c", Q3, LineKind.ADJUSTMENT),
    ]
    assert all(line.quarter == Q4 for line in q4.lines)

    # A, Q3: 42.37 + 7.63 = 50.00 kWh → 16.6347 → 16.63 ERE, of which 14.10 stated: +2.53 ERE
    # (not 7.63 × 0.332694 = 2.538 → 2.54: the difference of totals keeps Q3 exact).
    # Gross now 16.63 × 0.30 = 4.989 → €4.99, stated €4.23: +€0.76; fee 20 % = 0.152 → €0.15;
    # VAT 0.15 × 21/121 = 0.026 → €0.03; net 0.76 − 0.15 = €0.61.
    assert figures(a_q3) == (
        D("7.63"),
        D("2.53"),
        D("0.30"),
        D("0.76"),
        D("0.20"),
        D("0.15"),
        D("0.03"),
        D("0.61"),
    )
    assert a_q3.sessions == (SessionShare(7, D("7.63")),)

    # A, Q4: boundary session 5 (5.5 kWh) + session 8 (12 kWh) = 17.5 kWh → 5.822145 → 5.82 ERE;
    # gross 5.82 × €0.32 = 1.8624 → €1.86; fee 20 % = 0.372 → €0.37; VAT 0.37 × 21/121 = 0.0642
    # → €0.06; net €1.49.
    assert figures(a_q4) == (
        D("17.5"),
        D("5.82"),
        D("0.32"),
        D("1.86"),
        D("0.20"),
        D("0.37"),
        D("0.06"),
        D("1.49"),
    )
    assert [share.session_id for share in a_q4.sessions] == [5, 8]

    # B, Q3: 100 → 97 kWh: 32.271318 → 32.27 ERE, −1.00 ERE; gross 32.27 × 0.30 = 9.681 → €9.68,
    # −€0.30; fee 15 % × −0.30 = −0.045 → −€0.05 (half away from zero); VAT −0.05 × 21/121 =
    # −0.0087 → −€0.01; net −0.30 + 0.05 = −€0.25.
    assert figures(b_q3) == (
        D("-3"),
        D("-1.00"),
        D("0.30"),
        D("-0.30"),
        D("0.15"),
        D("-0.05"),
        D("-0.01"),
        D("-0.25"),
    )
    assert b_q3.sessions == (SessionShare(12, D("-3")),)

    # C, Q3: 30 + 8 = 38 kWh → 12.642372 → 12.64 ERE, +2.66; gross 12.64 × 0.30 = 3.792 → €3.79,
    # +€0.80; fee 20 % = €0.16; VAT 0.16 × 21/121 = 0.0278 → €0.03; net €0.64.
    assert figures(c_q3) == (
        D("8"),
        D("2.66"),
        D("0.30"),
        D("0.80"),
        D("0.20"),
        D("0.16"),
        D("0.03"),
        D("0.64"),
    )
    assert c_q3.sessions == (SessionShare(21, D("8")),)

    # Totals: gross 0.76 + 1.86 − 0.30 + 0.80 = €3.12 = fee 0.63 + net 2.49.
    assert q4.totals == Totals(D("30.13"), D("10.01"), D("3.12"), D("0.63"), D("0.11"), D("2.49"))

    # Nothing changes after that: closing the next quarter on the same view adjusts nothing.
    q1 = close_quarter(
        Q1_2027, assess_all(q4_records, mandates), FACTORS, closed=[q3, q4], fee_plans=PLANS
    )
    assert q1.lines == ()


def test_a_session_no_longer_eligible_is_reversed_in_full() -> None:
    q3 = close_q3()
    # Session 22 turns out to have an unverifiable meter: C's whole Q3 line is taken back.
    records = [
        r
        if r.session_id != 22
        else session(
            22,
            "CP-C",
            local(2026, 8, 20, 8),
            local(2026, 8, 20, 12),
            30_000,
            meter_class="signed-unverified",
        )
        for r in Q3_RECORDS
    ]
    q4 = close_quarter(Q4, assess_all(records, MANDATES), FACTORS, closed=[q3], fee_plans=PLANS)
    (reversal,) = [line for line in q4.lines if line.customer_id == "cust-c"]
    (original,) = q3.for_customer("cust-c")
    assert reversal.kind is LineKind.ADJUSTMENT
    assert figures(reversal) == (
        D("-30"),
        D("-9.98"),
        D("0.30"),
        D("-2.99"),
        D("0.20"),
        D("-0.60"),
        D("-0.10"),
        D("-2.39"),
    )
    assert (reversal.kwh, reversal.gross, reversal.net) == (
        -original.kwh,
        -original.gross,
        -original.net,
    )


def test_a_price_corrected_after_the_close_becomes_an_adjustment() -> None:
    q3 = close_q3()
    corrected = parse_factor_table(
        FACTORS_TEXT.replace('"2026Q3"\neur_per_ere = 0.30', '"2026Q3"\neur_per_ere = 0.31')
    )
    q4 = close_quarter(
        Q4, assess_all(Q3_RECORDS, MANDATES), corrected, closed=[q3], fee_plans=PLANS
    )
    (a_q3,) = [
        line for line in q4.lines if line.customer_id == "cust-a" and line.delivery_quarter == Q3
    ]
    # A: 14.10 ERE × €0.31 = 4.371 → €4.37, stated €4.23: +€0.14; fee 20 % = 0.028 → €0.03;
    # VAT 0.03 × 21/121 = 0.0052 → €0.01; net €0.11. No energy or credits change.
    assert figures(a_q3) == (
        D("0"),
        D("0.00"),
        D("0.31"),
        D("0.14"),
        D("0.20"),
        D("0.03"),
        D("0.01"),
        D("0.11"),
    )
    assert a_q3.sessions == ()


def test_a_session_moved_to_another_customer_leaves_one_line_and_joins_the_other() -> None:
    moved_at = local(2026, 8, 5, 12)
    first = [assessment(1, "cust-a", EAN_A, moved_at, D("10"))]
    q3 = close_quarter(Q3, first, FACTORS)
    second = [assessment(1, "cust-b", EAN_B, moved_at, D("10"))]
    q4 = close_quarter(Q4, second, FACTORS, closed=[q3], fee_plans=PLANS)
    assert [(line.customer_id, line.kwh, line.sessions) for line in q4.lines] == [
        ("cust-a", D("-10"), (SessionShare(1, D("-10")),)),
        ("cust-b", D("10"), (SessionShare(1, D("10")),)),
    ]


# --- the quarter boundary --------------------------------------------------------------------


def assessment(
    session_id: int,
    customer: str,
    ean: Ean,
    ended_at: datetime,
    kwh: Decimal,
    eligible: bool = True,
) -> Assessment:
    return Assessment(
        session_id=session_id,
        eligibility=Eligibility.ELIGIBLE if eligible else Eligibility.INELIGIBLE,
        reason=Reason.ELIGIBLE if eligible else Reason.NO_MID_EVIDENCE,
        detail="",
        kwh=kwh if eligible else D(0),
        customer_id=customer,
        ean=ean,
        ended_at=ended_at,
    )


@pytest.mark.parametrize(
    ("ended_at", "quarter"),
    [
        (datetime(2026, 9, 30, 21, 59, 59, tzinfo=UTC), Q3),  # 23:59:59 in Amsterdam
        (datetime(2026, 9, 30, 22, 0, 0, tzinfo=UTC), Q4),  # 00:00:00 on 1 October: the new quarter
        (datetime(2026, 9, 30, 22, 30, tzinfo=UTC), Q4),  # UTC still says 30 September
        (local(2027, 1, 1, 0, 15), Q1_2027),
    ],
)
def test_a_session_belongs_to_the_quarter_of_its_end(ended_at: datetime, quarter: Quarter) -> None:
    assert delivery_quarter(assessment(1, "cust-a", EAN_A, ended_at, D("5"))) == quarter


def test_a_session_across_new_year_counts_at_the_new_years_factor() -> None:
    # 31 December 23:00 to 1 January 00:15: ends in 2027Q1, so 2027's (test) share 0.55 applies:
    # 10 kWh × 0.55 × 183 × 3.6 / 1000 = 3.6234 → 3.62 ERE (at 2026's share it would be 3.33);
    # gross 3.62 × €0.32 = 1.1584 → €1.16.
    crossing = [assessment(1, "cust-a", EAN_A, local(2027, 1, 1, 0, 15), D("10"))]
    assert close_quarter(Q4, crossing, FACTORS).lines == ()  # not in Q4 at all
    (line,) = close_quarter(Q1_2027, crossing, FACTORS).lines
    assert (line.delivery_quarter, line.ere, line.gross) == (Q1_2027, D("3.62"), D("1.16"))


# --- errors ----------------------------------------------------------------------------------


def test_a_closed_quarter_cannot_be_closed_again_or_overtaken() -> None:
    q3 = close_q3()
    with pytest.raises(
        CloseError, match="2026Q3 is already closed; corrections go into a later quarter"
    ):
        close_quarter(Q3, [], FACTORS, closed=[q3])
    with pytest.raises(
        CloseError, match="2026Q3 is already closed, so 2026Q2 can no longer be closed"
    ):
        close_quarter(Q2, [], FACTORS, closed=[q3])
    with pytest.raises(CloseError, match="2026Q3 appears twice"):
        close_quarter(Q4, [], FACTORS, closed=[q3, q3])


def test_inconsistent_views_are_refused() -> None:
    ended = local(2026, 8, 5, 12)
    twice = [
        assessment(1, "cust-a", EAN_A, ended, D("1")),
        assessment(1, "cust-a", EAN_A, ended, D("2")),
    ]
    with pytest.raises(CloseError, match="session 1 is assessed twice"):
        close_quarter(Q3, twice, FACTORS)
    no_ean = [
        Assessment(2, Eligibility.ELIGIBLE, Reason.ELIGIBLE, "", D("1"), "cust-a", None, ended)
    ]
    with pytest.raises(CloseError, match="eligible session 2 has no customer or EAN"):
        close_quarter(Q3, no_ean, FACTORS)
    no_end = [
        Assessment(3, Eligibility.ELIGIBLE, Reason.ELIGIBLE, "", D("1"), "cust-a", EAN_A, None)
    ]
    with pytest.raises(CloseError, match="session 3 has no end time"):
        close_quarter(Q3, no_end, FACTORS)


def test_a_missing_factor_stops_the_close() -> None:
    old = [assessment(1, "cust-a", EAN_A, local(2025, 11, 5, 12), D("10"))]
    with pytest.raises(MissingFactorError, match="no ERE factors for delivery year 2025"):
        close_quarter(Q3, old, FACTORS)
    # Reviewing only from Q3 on leaves the 2025 session alone.
    assert close_quarter(Q3, old, FACTORS, review_from=Q3).lines == ()


def test_review_from_ignores_older_history_on_both_sides() -> None:
    q3 = close_q3()
    changed = [assessment(1, "cust-a", EAN_A, local(2026, 9, 1, 12), D("99"))]
    assert close_quarter(Q4, changed, FACTORS, closed=[q3], review_from=Q4).lines == ()
    reviewed = close_quarter(Q4, changed, FACTORS, closed=[q3])
    assert {line.kind for line in reviewed.lines} == {LineKind.ADJUSTMENT}
    with pytest.raises(CloseError, match="review_from 2027Q1 is after 2026Q4"):
        close_quarter(Q4, changed, FACTORS, closed=[q3], review_from=Q1_2027)


# --- properties ------------------------------------------------------------------------------

CUSTOMER_EANS = [("c1", EAN_A), ("c2", EAN_B), ("c2", EAN_C)]  # c2 has two connections
QUARTERS_2026 = [Quarter(2026, n) for n in (2, 3, 4)]


@st.composite
def views(draw: st.DrawFn, ids: range = range(1, 13)) -> list[Assessment]:
    """A current view: for some session ids, an assessment in a 2026 quarter from Q2 to Q4."""
    result = []
    for session_id in ids:
        if not draw(st.booleans()):
            continue
        customer, ean = draw(st.sampled_from(CUSTOMER_EANS))
        quarter = draw(st.sampled_from(QUARTERS_2026))
        ended = quarter.start + timedelta(
            days=draw(st.integers(0, 89)), minutes=draw(st.integers(0, 1439))
        )
        wh = draw(
            st.integers(-20_000, 80_000)
        )  # negative: a session that fed back more than it took
        result.append(
            assessment(session_id, customer, ean, ended, D(wh).scaleb(-3), draw(st.booleans()))
        )
    return result


plans = st.builds(
    FeePlan,
    st.integers(10, 30).map(lambda n: D(n).scaleb(-2)),
    st.lists(st.integers(0, 50).map(lambda n: D(n).scaleb(-3)), max_size=4).map(tuple),
)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def eligible_kwh_by_quarter(view: list[Assessment]) -> dict[Quarter, Decimal]:
    sums: dict[Quarter, Decimal] = defaultdict(Decimal)
    for item in view:
        if item.eligible:
            sums[delivery_quarter(item)] += item.kwh
    return sums


def check_cents(statement: QuarterStatement) -> None:
    for line in statement.lines:
        assert line.gross == line.fee + line.net
        assert line.fee == to_cents(line.gross * line.fee_rate)
        assert line.fee_vat == to_cents(line.fee * 21 / 121)
        assert line.fee_rate >= FEE_FLOOR_RATE
        for figure in (line.gross, line.fee, line.fee_vat, line.net):
            assert figure == to_cents(figure)
    totals = statement.totals
    assert totals.gross == totals.fee + totals.net


@PROPERTY
@given(views(), st.dictionaries(st.sampled_from(["c1", "c2"]), plans))
def test_property_statement_sums_equal_eligible_session_sums(
    view: list[Assessment], fee_plans: dict[str, FeePlan]
) -> None:
    statement = close_quarter(Q3, view, FACTORS, fee_plans=fee_plans)
    by_quarter = eligible_kwh_by_quarter(view)
    regular = sum((line.kwh for line in statement.lines if line.kind is LineKind.REGULAR), D(0))
    assert regular == by_quarter.get(Q3, D(0))
    # With nothing closed before, Q2's sessions are stated now too (as adjustments); Q4 waits.
    assert statement.totals.kwh == by_quarter.get(Q2, D(0)) + by_quarter.get(Q3, D(0))
    shares = sum((share.kwh for line in statement.lines for share in line.sessions), D(0))
    assert shares == statement.totals.kwh
    check_cents(statement)


@PROPERTY
@given(
    views(),
    views(),
    st.dictionaries(st.sampled_from(["c1", "c2"]), plans),
    st.randoms(use_true_random=False),
)
def test_property_a_close_is_a_pure_function(
    first: list[Assessment],
    second: list[Assessment],
    fee_plans: dict[str, FeePlan],
    shuffler: random.Random,
) -> None:
    q3 = close_quarter(Q3, first, FACTORS, fee_plans=fee_plans)
    assert close_quarter(Q3, first, FACTORS, fee_plans=fee_plans) == q3
    shuffled = list(second)
    shuffler.shuffle(shuffled)
    q4 = close_quarter(Q4, second, FACTORS, closed=[q3], fee_plans=fee_plans)
    assert close_quarter(Q4, shuffled, FACTORS, closed=[q3], fee_plans=dict(fee_plans)) == q4
    assert (
        close_quarter(Q3, first, FACTORS, fee_plans=fee_plans) == q3
    )  # nothing was changed by Q4's close


@PROPERTY
@given(
    st.lists(views(), min_size=3, max_size=3), st.dictionaries(st.sampled_from(["c1", "c2"]), plans)
)
def test_property_adjustments_add_up_to_what_is_true_now(
    history: list[list[Assessment]], fee_plans: dict[str, FeePlan]
) -> None:
    closed: list[QuarterStatement] = []
    for quarter, view in zip(QUARTERS_2026, history, strict=True):
        statement = close_quarter(quarter, view, FACTORS, closed=closed, fee_plans=fee_plans)
        check_cents(statement)
        closed.append(statement)
    final = history[-1]

    # Everything stated per customer, EAN and delivery quarter equals one fresh close of that
    # quarter on today's view: kWh, ERE and gross to the last digit.
    stated: dict[tuple[str, Ean, Quarter], list[Decimal]] = defaultdict(lambda: [D(0), D(0), D(0)])
    for statement in closed:
        for line in statement.lines:
            sums = stated[(line.customer_id, line.ean, line.delivery_quarter)]
            sums[0] += line.kwh
            sums[1] += line.ere
            sums[2] += line.gross
    fresh: dict[tuple[str, Ean, Quarter], list[Decimal]] = {}
    for quarter in QUARTERS_2026:
        for line in close_quarter(quarter, final, FACTORS, review_from=quarter).lines:
            fresh[(line.customer_id, line.ean, quarter)] = [line.kwh, line.ere, line.gross]
    for key in stated.keys() | fresh.keys():
        assert stated.get(key, [D(0)] * 3) == fresh.get(key, [D(0)] * 3), key

    # The sum over all statements equals the sum over today's eligible sessions.
    all_lines_kwh = sum((line.kwh for statement in closed for line in statement.lines), D(0))
    assert all_lines_kwh == sum(eligible_kwh_by_quarter(final).values(), D(0))

    # Closing once more on the same view adjusts nothing.
    assert close_quarter(Q1_2027, final, FACTORS, closed=closed, fee_plans=fee_plans).lines == ()
