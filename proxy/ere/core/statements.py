"""The quarterly close: assessed sessions in, one frozen statement of the quarter out.

`close_quarter` is a pure function of its arguments (no clock, no database): the same inputs
always give the same statement, in any input order. A statement has one line per customer, EAN
and delivery quarter with kWh, ERE, price, gross, fee (VAT included), the VAT in the fee and the
net payout.

Quarter of a session (the boundary rule): a session belongs, with all its energy, to the quarter
that contains its end (the stop time; an orphan's last reading time), by Dutch local time. A
session from 30 June 23:30 to 1 July 00:30 counts in Q3; one ending at 1 July 00:00:00 exactly
counts in Q3 too (quarters are half-open). Its delivery year, and so its ERE factor, is that
quarter's year. Why the end: a session's energy is only final when it ends, and the statement
of a quarter should not wait for sessions still running at its close; splitting by meter
samples would need samples that chargers do not always send. A session spans hours, so at most
one session per connector straddles a boundary.

Closed quarters are never rewritten. Closing quarter Q compares the current view of every
session with everything stated so far (the `closed` statements):

* sessions delivered in Q make the regular lines of Q;
* for each earlier delivery quarter P (customer, EAN), a difference between what the sessions
  are worth now and what the earlier lines stated becomes an adjustment line in Q, kind
  `adjustment`, `delivery_quarter` P. A late session, one that changed (a stop after an
  orphan's close, new evidence, a mandate found later), one that is no longer eligible, or a
  price corrected in the factor table after P closed: each shows up once, as a difference.

Figures of a line (rounding rules in `proxy.ere.core.rounding` and `proxy.ere.core.fees`):

* regular line: kWh = sum of the sessions' kWh (exact); ERE = ere(kWh) for P's year, to 0.01;
  gross = ERE × P's price, to the cent; fee, VAT and net from the customer's fee plan;
* adjustment line: kWh, ERE and gross are the differences "worth now − stated so far", where
  "worth now" applies the regular rules to P's current total. So everything stated for P adds
  up to exactly what a single close with today's knowledge would state. The fee of an
  adjustment is charged at the customer's plan at this close, on the gross difference;
* every line satisfies gross = fee + net to the cent.

Energy of delivery quarters after Q is ignored (it belongs to a later close). `review_from`
limits which earlier delivery quarters are compared, for callers that keep only recent history
at hand; without it, every quarter in `closed` is reviewed, so the view must then contain every
session those statements counted: a session missing from it counts as no longer eligible.

Errors: `CloseError` for a quarter already closed (or a later one closed before it), duplicate
sessions or statements, an eligible assessment without customer, EAN or end time, or a
`review_from` after the quarter being closed;
`MissingFactorError` when the factor table lacks a year or a price the close needs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext

from proxy.ere.core.ean import Ean
from proxy.ere.core.eligibility import Assessment
from proxy.ere.core.factors import FactorTable, ere
from proxy.ere.core.fees import FeePlan, split_gross
from proxy.ere.core.quarters import Quarter
from proxy.ere.core.rounding import exact, to_cents

DEFAULT_FEE_PLAN = FeePlan()  # the standard rate, no referral discounts

__all__ = [
    "CloseError",
    "LineKind",
    "QuarterStatement",
    "SessionShare",
    "StatementLine",
    "Totals",
    "close_quarter",
    "delivery_quarter",
]

_ZERO = Decimal(0)


class CloseError(ValueError):
    """A close that cannot be made from these inputs; the message says which input is wrong."""


class LineKind(enum.StrEnum):
    REGULAR = "regular"  # energy delivered in the statement's own quarter
    ADJUSTMENT = "adjustment"  # a difference for a quarter closed earlier


@dataclass(frozen=True, slots=True)
class SessionShare:
    """The kWh of one session on a line (on an adjustment line, the change in its kWh)."""

    session_id: int
    kwh: Decimal


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One customer's EAN in one delivery quarter, as stated in the close of `quarter`."""

    quarter: Quarter
    delivery_quarter: Quarter
    kind: LineKind
    customer_id: str
    ean: Ean
    kwh: Decimal
    ere: Decimal
    eur_per_ere: Decimal
    gross: Decimal
    fee_rate: Decimal
    fee: Decimal
    fee_vat: Decimal
    net: Decimal
    sessions: tuple[SessionShare, ...]

    @property
    def fee_excl_vat(self) -> Decimal:
        return exact().subtract(self.fee, self.fee_vat)


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums of the figures of some lines."""

    kwh: Decimal
    ere: Decimal
    gross: Decimal
    fee: Decimal
    fee_vat: Decimal
    net: Decimal

    @classmethod
    def of(cls, lines: Iterable[StatementLine]) -> Totals:
        kwh = ere_total = gross = fee = fee_vat = net = _ZERO
        with localcontext(exact()):
            for line in lines:
                kwh += line.kwh
                ere_total += line.ere
                gross += line.gross
                fee += line.fee
                fee_vat += line.fee_vat
                net += line.net
        return cls(kwh, ere_total, gross, fee, fee_vat, net)


@dataclass(frozen=True, slots=True)
class QuarterStatement:
    """The frozen result of closing one quarter: its lines, sorted by customer, EAN, delivery."""

    quarter: Quarter
    lines: tuple[StatementLine, ...]

    @property
    def totals(self) -> Totals:
        return Totals.of(self.lines)

    @property
    def customers(self) -> tuple[str, ...]:
        return tuple(sorted({line.customer_id for line in self.lines}))

    def for_customer(self, customer_id: str) -> tuple[StatementLine, ...]:
        """The lines of one customer (empty if the customer has none this quarter)."""
        return tuple(line for line in self.lines if line.customer_id == customer_id)


def delivery_quarter(assessment: Assessment) -> Quarter:
    """The quarter a session's energy belongs to: the one containing its end (Dutch time).

    CloseError if the assessment has no end time.
    """
    if assessment.ended_at is None:
        raise CloseError(f"session {assessment.session_id} has no end time, so no quarter")
    return Quarter.containing(assessment.ended_at)


_Key = tuple[str, Ean, Quarter]  # customer, EAN, delivery quarter


@dataclass(slots=True)
class _Stated:
    """Everything stated so far for one key, summed over regular and adjustment lines."""

    sessions: dict[int, Decimal]
    kwh: Decimal = _ZERO
    ere: Decimal = _ZERO
    gross: Decimal = _ZERO


def close_quarter(
    quarter: Quarter,
    assessments: Iterable[Assessment],
    factors: FactorTable,
    closed: Iterable[QuarterStatement] = (),
    fee_plans: Mapping[str, FeePlan] | None = None,
    default_fee_plan: FeePlan = DEFAULT_FEE_PLAN,
    review_from: Quarter | None = None,
) -> QuarterStatement:
    """Close `quarter`: regular lines for its sessions, adjustments for earlier quarters.

    `assessments` is the current view of the sessions (ineligible ones count zero);
    `closed` the statements of quarters closed before; `fee_plans` each customer's plan, with
    `default_fee_plan` (20 %) for customers not in it. Raises CloseError or MissingFactorError
    as the module docstring describes; never changes its inputs.
    """
    plans = fee_plans or {}
    closed = tuple(closed)
    _check_closed_order(quarter, closed)
    if review_from is not None and review_from > quarter:
        raise CloseError(
            f"review_from {review_from} is after {quarter}: its own sessions would be skipped"
        )
    with localcontext(exact()):  # sums and differences of kWh, ERE and euros stay exact
        lines = _lines(quarter, assessments, factors, closed, plans, default_fee_plan, review_from)
    return QuarterStatement(quarter, tuple(lines))


def _lines(
    quarter: Quarter,
    assessments: Iterable[Assessment],
    factors: FactorTable,
    closed: tuple[QuarterStatement, ...],
    plans: Mapping[str, FeePlan],
    default_fee_plan: FeePlan,
    review_from: Quarter | None,
) -> list[StatementLine]:
    current = _current_view(quarter, assessments, review_from)
    stated = _stated_so_far(closed, review_from)
    lines: list[StatementLine] = []
    for key in sorted(current.keys() | stated.keys(), key=_sort_key):
        customer_id, _ean, delivered = key
        plan = plans.get(customer_id, default_fee_plan)
        now = current.get(key, {})
        if delivered == quarter:
            lines.append(_regular_line(quarter, key, now, factors, plan))
            continue
        adjustment = _adjustment_line(
            quarter, key, now, stated.get(key, _Stated({})), factors, plan
        )
        if adjustment is not None:
            lines.append(adjustment)
    return lines


def _check_closed_order(quarter: Quarter, closed: tuple[QuarterStatement, ...]) -> None:
    seen: set[Quarter] = set()
    for statement in closed:
        if statement.quarter in seen:
            raise CloseError(f"{statement.quarter} appears twice among the closed statements")
        seen.add(statement.quarter)
        if statement.quarter == quarter:
            raise CloseError(f"{quarter} is already closed; corrections go into a later quarter")
        if statement.quarter > quarter:
            raise CloseError(
                f"{statement.quarter} is already closed, so {quarter} can no longer be closed"
            )
        for line in statement.lines:
            if line.quarter != statement.quarter or line.delivery_quarter > statement.quarter:
                raise CloseError(
                    f"statement {statement.quarter} holds a line of {line.quarter}/{line.delivery_quarter}"
                )


def _current_view(
    quarter: Quarter, assessments: Iterable[Assessment], review_from: Quarter | None
) -> dict[_Key, dict[int, Decimal]]:
    """Eligible kWh per key and session, for delivery quarters up to `quarter`."""
    seen: set[int] = set()
    view: dict[_Key, dict[int, Decimal]] = {}
    for assessment in assessments:
        if assessment.session_id in seen:
            raise CloseError(f"session {assessment.session_id} is assessed twice")
        seen.add(assessment.session_id)
        if not assessment.eligible:
            continue
        if assessment.customer_id is None or assessment.ean is None:
            raise CloseError(f"eligible session {assessment.session_id} has no customer or EAN")
        delivered = delivery_quarter(assessment)
        if delivered > quarter or (review_from is not None and delivered < review_from):
            continue
        key = (assessment.customer_id, assessment.ean, delivered)
        view.setdefault(key, {})[assessment.session_id] = assessment.kwh
    return view


def _stated_so_far(
    closed: Iterable[QuarterStatement], review_from: Quarter | None
) -> dict[_Key, _Stated]:
    stated: dict[_Key, _Stated] = {}
    for statement in closed:
        for line in statement.lines:
            if review_from is not None and line.delivery_quarter < review_from:
                continue
            entry = stated.setdefault(
                (line.customer_id, line.ean, line.delivery_quarter), _Stated({})
            )
            entry.kwh += line.kwh
            entry.ere += line.ere
            entry.gross += line.gross
            for share in line.sessions:
                entry.sessions[share.session_id] = (
                    entry.sessions.get(share.session_id, _ZERO) + share.kwh
                )
    return stated


def _worth(
    kwh: Decimal, delivered: Quarter, factors: FactorTable
) -> tuple[Decimal, Decimal, Decimal]:
    """ERE, price and gross of `kwh` delivered in a quarter, by the regular rounding rules."""
    credits = ere(kwh, factors.for_year(delivered.year))
    price = factors.price_for(delivered).eur_per_ere
    return credits, price, to_cents(exact().multiply(credits, price))


def _regular_line(
    quarter: Quarter,
    key: _Key,
    sessions: Mapping[int, Decimal],
    factors: FactorTable,
    plan: FeePlan,
) -> StatementLine:
    kwh = sum(sessions.values(), _ZERO)
    credits, price, gross = _worth(kwh, quarter, factors)
    shares = tuple(
        SessionShare(session_id, sessions[session_id]) for session_id in sorted(sessions)
    )
    return _line(quarter, key, LineKind.REGULAR, kwh, credits, price, gross, plan, shares)


def _adjustment_line(
    quarter: Quarter,
    key: _Key,
    sessions: Mapping[int, Decimal],
    stated: _Stated,
    factors: FactorTable,
    plan: FeePlan,
) -> StatementLine | None:
    delivered = key[2]
    changes = []
    for session_id in sorted(sessions.keys() | stated.sessions.keys()):
        change = sessions.get(session_id, _ZERO) - stated.sessions.get(session_id, _ZERO)
        if change:
            changes.append(SessionShare(session_id, change))
    kwh_now = sum(sessions.values(), _ZERO)
    credits_now, price, gross_now = _worth(kwh_now, delivered, factors)
    kwh = kwh_now - stated.kwh
    credits = credits_now - stated.ere
    gross = gross_now - stated.gross
    if not changes and not kwh and not credits and not gross:
        return None
    return _line(
        quarter, key, LineKind.ADJUSTMENT, kwh, credits, price, gross, plan, tuple(changes)
    )


def _line(
    quarter: Quarter,
    key: _Key,
    kind: LineKind,
    kwh: Decimal,
    credits: Decimal,
    price: Decimal,
    gross: Decimal,
    plan: FeePlan,
    shares: tuple[SessionShare, ...],
) -> StatementLine:
    customer_id, ean, delivered = key
    split = split_gross(gross, plan)
    return StatementLine(
        quarter=quarter,
        delivery_quarter=delivered,
        kind=kind,
        customer_id=customer_id,
        ean=ean,
        kwh=kwh,
        ere=credits,
        eur_per_ere=price,
        gross=split.gross,
        fee_rate=split.fee_rate,
        fee=split.fee,
        fee_vat=split.fee_vat,
        net=split.net,
        sessions=shares,
    )


def _sort_key(key: _Key) -> tuple[str, str, Quarter]:
    return (key[0], key[1].code, key[2])
