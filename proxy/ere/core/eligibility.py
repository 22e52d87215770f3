"""Whether one charging session earns ERE, why (not), and how many kWh it counts.

`assess(session, context)` takes a session as the `sessions` table holds it plus what is known
around it (the charger's link to a customer and EAN, the charger's maximum power, the EAN's
mandates, the other sessions on the same connector) and returns an `Assessment`: eligible or
not, one `Reason` with a human text and a detail with the numbers, and the eligible kWh.

Checks run in this order; the first that fails is the reason given:

0. the session is not a duplicate: the same charging event recorded from another source
   (`duplicate_of`, see `proxy.ingest.dedup`) counts there, never twice; the detail names it;
1. the session is finished: `active` is not yet, `rejected` never counts, and an `orphaned`
   session counts only with a final reading (its last energy register reading and its time);
2. the record is complete: a start time, an end (stop time, or an orphan's last reading time)
   and an energy figure;
3. the end is not before the start;
4. the charger's clock agrees with the proxy's: a start or stop timestamp may not lie more than
   `clock_ahead` after the moment its frame arrived (a clock running ahead), nor more than
   `max_clock_lag` before it (longer than a charger keeps an offline queue: a clock running
   behind, or a replay); sessions without receive times (captured before they were recorded)
   are not checked;
5. the meter never went backwards: start <= last reading <= stop (readings that exist);
6. neither imported nor exported energy is negative;
7. MID evidence: only meter classes `signed-verified` (signed OCMF readings that verify with the
   meter's pinned key) and `declared` (a meter model on the MID list, with a serial number)
   count. `signed-unverified` does not: a signature that fails or a changed key is a warning
   sign, not evidence. `unknown` is no evidence at all;
8. the charger is linked to a customer, and the link names the EAN;
9. one valid mandate for that EAN and that customer covers the session's date (the Dutch
   calendar date of its end);
10. neither the imported nor the exported energy exceeds the charger's maximum power over the
   session's duration, plus a margin (`[ere] max_power_margin_wh`, default 100 Wh) for meter
   registers that count whole Wh and timestamps in whole seconds; the detail names the
   margin used;
11. no other session on the same connector overlaps it in time (half-open intervals; other
   sessions that were rejected, are duplicates or have no start time are ignored; one without
   an end is an instant at its start). Both sessions of an overlap fail: there is no telling
   which is real.

Energy fed back to the grid (V2G, `Energy.Active.Export.Register` over the session) is
deducted: eligible kWh = (imported Wh − exported Wh) / 1000, exact. A session that fed back
more than it took is still eligible and counts negative kWh, so the energy it returned is
deducted from the customer's other sessions in the statement rather than silently dropped.

Errors: inputs that are inconsistent by construction (a float, a naive datetime, a mandate of
another EAN, a "same connector" session on another connector) raise `EligibilityInputError` or
TypeError; everything about the data itself is an ineligible assessment, never an exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from proxy.capture.evidence import MeterClass
from proxy.ere.core.ean import Ean
from proxy.ere.core.quarters import local_date
from proxy.ere.core.rounding import exact, require_decimal, wide

__all__ = [
    "DEFAULT_CLOCK_AHEAD",
    "DEFAULT_MAX_CLOCK_LAG",
    "MID_EVIDENCE",
    "READING_MARGIN_WH",
    "Assessment",
    "ChargerLink",
    "Eligibility",
    "EligibilityInputError",
    "Mandate",
    "MeterClass",
    "Reason",
    "SessionContext",
    "SessionRecord",
    "SessionStatus",
    "assess",
]

MID_EVIDENCE = frozenset({MeterClass.SIGNED_VERIFIED, MeterClass.DECLARED})
READING_MARGIN_WH = Decimal(100)  # the default of `SessionContext.margin_wh`
DEFAULT_CLOCK_AHEAD = timedelta(minutes=5)
DEFAULT_MAX_CLOCK_LAG = timedelta(days=35)
_SECONDS_PER_HOUR = Decimal(3600)


class EligibilityInputError(ValueError):
    """Inputs that contradict each other or their types; a caller's mistake, not bad data."""


class SessionStatus(enum.StrEnum):
    """The `sessions.status` column."""

    ACTIVE = "active"
    COMPLETED = "completed"
    ORPHANED = "orphaned"
    REJECTED = "rejected"


class Eligibility(enum.StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"


class Reason(enum.StrEnum):
    """Why a session is (in)eligible; `text` is the sentence for statements and dashboards."""

    ELIGIBLE = "eligible"
    DUPLICATE = "duplicate"
    NOT_FINISHED = "not-finished"
    REJECTED = "rejected"
    ORPHANED_WITHOUT_FINAL_READING = "orphaned-without-final-reading"
    INCOMPLETE_RECORD = "incomplete-record"
    ENDS_BEFORE_START = "ends-before-start"
    CHARGER_CLOCK = "charger-clock"
    METER_WENT_BACKWARDS = "meter-went-backwards"
    NEGATIVE_ENERGY = "negative-energy"
    NO_MID_EVIDENCE = "no-mid-evidence"
    NOT_LINKED = "not-linked"
    NO_EAN = "no-ean"
    NO_VALID_MANDATE = "no-valid-mandate"
    MANDATE_CONFLICT = "mandate-conflict"
    EXCEEDS_MAX_POWER = "exceeds-max-power"
    OVERLAPS_OTHER_SESSION = "overlaps-other-session"

    @property
    def text(self) -> str:
        return _REASON_TEXTS[self]


_REASON_TEXTS = {
    Reason.ELIGIBLE: "MID-metered session with a valid mandate",
    Reason.DUPLICATE: "the same charging event was recorded from another source and counts there",
    Reason.NOT_FINISHED: "the session is still running",
    Reason.REJECTED: "the back-office rejected the transaction",
    Reason.ORPHANED_WITHOUT_FINAL_READING: "the session never ended and has no final meter reading",
    Reason.INCOMPLETE_RECORD: "the session lacks a start time, an end time or an energy reading",
    Reason.ENDS_BEFORE_START: "the session ends before it starts",
    Reason.CHARGER_CLOCK: "the charger's clock disagrees with the time its frames arrived",
    Reason.METER_WENT_BACKWARDS: "the energy register went backwards",
    Reason.NEGATIVE_ENERGY: "the session reports negative energy",
    Reason.NO_MID_EVIDENCE: "no evidence of a MID-certified meter in the charger",
    Reason.NOT_LINKED: "the charger is not linked to a customer",
    Reason.NO_EAN: "the charger's customer link has no EAN",
    Reason.NO_VALID_MANDATE: "no valid mandate for the EAN on the session's date",
    Reason.MANDATE_CONFLICT: "mandates of different customers cover the EAN on the session's date",
    Reason.EXCEEDS_MAX_POWER: "more energy than the charger's maximum power allows in that time",
    Reason.OVERLAPS_OTHER_SESSION: "another session on the same connector overlaps it",
}


def _optional_decimal(value: Decimal | None, name: str) -> None:
    if value is not None:
        require_decimal(value, name)


def _optional_aware(value: datetime | None, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise EligibilityInputError(f"{name} {value.isoformat()} has no time zone")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One row of the `sessions` table, plus the energy the session fed back (V2G).

    Energy is in Wh as stored; `energy_wh` is the table's best figure (signed readings, else
    stop − start, else last reading − start). `exported_wh` is the rise of the export register
    over the session, 0 for chargers that cannot feed back. `meter_class` and `status` accept
    the column strings. `source` is where the session came from (`ocpp`, or a partner's
    `ocpi`, `api`, `csv`: those have no transaction id), `duplicate_of` the session of the same
    charging event that counts instead of this one. TypeError for floats, EligibilityInputError for naive datetimes or
    unknown enum strings.
    """

    session_id: int
    identity: str
    transaction_id: str | None
    connector_id: int | None
    started_at: datetime | None
    stopped_at: datetime | None
    meter_start_wh: Decimal | None
    meter_stop_wh: Decimal | None
    last_reading_at: datetime | None
    last_reading_wh: Decimal | None
    energy_wh: Decimal | None
    meter_class: MeterClass
    status: SessionStatus
    exported_wh: Decimal = Decimal(0)
    evse_id: int | None = None
    start_received_at: datetime | None = None
    stop_received_at: datetime | None = None
    source: str = "ocpp"
    duplicate_of: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "meter_class", MeterClass(self.meter_class))
            object.__setattr__(self, "status", SessionStatus(self.status))
        except ValueError as error:
            raise EligibilityInputError(f"session {self.session_id}: {error}") from None
        for name in (
            "meter_start_wh",
            "meter_stop_wh",
            "last_reading_wh",
            "energy_wh",
            "exported_wh",
        ):
            _optional_decimal(getattr(self, name), name)
        for name in ("started_at", "stopped_at", "last_reading_at"):
            _optional_aware(getattr(self, name), name)

    @property
    def ended_at(self) -> datetime | None:
        """When the session ended: its stop time, or for an orphan its last reading time."""
        if self.stopped_at is not None:
            return self.stopped_at
        if self.status is SessionStatus.ORPHANED:
            return self.last_reading_at
        return None


@dataclass(frozen=True, slots=True)
class ChargerLink:
    """Which customer a charger belongs to and the EAN of the connection it charges from."""

    customer_id: str
    ean: Ean | None


@dataclass(frozen=True, slots=True)
class Mandate:
    """A customer's mandate (machtiging) for one EAN, valid on whole days within one year.

    `valid_until` is inclusive. EligibilityInputError if the period is reversed or crosses a
    year boundary (a mandate covers one calendar year at most).
    """

    customer_id: str
    ean: Ean
    valid_from: date
    valid_until: date

    def __post_init__(self) -> None:
        if self.valid_until < self.valid_from:
            raise EligibilityInputError(
                f"mandate for {self.ean} ends ({self.valid_until}) before it starts ({self.valid_from})"
            )
        if self.valid_from.year != self.valid_until.year:
            raise EligibilityInputError(
                f"mandate for {self.ean} runs from {self.valid_from} to {self.valid_until};"
                " a mandate covers one calendar year at most"
            )

    def covers(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_until


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What is known around a session: its charger's link and maximum power, the mandates of
    the linked EAN and the other sessions on the same connector.

    `max_power_w` is the charger's rated maximum in W (EligibilityInputError unless positive).
    `margin_wh`, `clock_ahead` and `max_clock_lag` are the close's rules (module docstring).
    """

    link: ChargerLink | None
    max_power_w: Decimal
    mandates: tuple[Mandate, ...] = ()
    same_connector: tuple[SessionRecord, ...] = field(default=())
    margin_wh: Decimal = READING_MARGIN_WH
    clock_ahead: timedelta = DEFAULT_CLOCK_AHEAD
    max_clock_lag: timedelta = DEFAULT_MAX_CLOCK_LAG

    def __post_init__(self) -> None:
        if require_decimal(self.max_power_w, "max_power_w") <= 0:
            raise EligibilityInputError(f"max_power_w must be positive, got {self.max_power_w}")
        if require_decimal(self.margin_wh, "margin_wh") < 0:
            raise EligibilityInputError(f"margin_wh cannot be negative, got {self.margin_wh}")
        object.__setattr__(self, "mandates", tuple(self.mandates))
        object.__setattr__(self, "same_connector", tuple(self.same_connector))


@dataclass(frozen=True, slots=True)
class Assessment:
    """The verdict on one session.

    `kwh` is what the session counts: imported − exported energy for an eligible session (it
    may be negative for a session that mostly fed back), 0 otherwise. `customer_id`, `ean` and
    `ended_at` are filled in as far as they are known, also for an ineligible session.
    """

    session_id: int
    eligibility: Eligibility
    reason: Reason
    detail: str
    kwh: Decimal
    customer_id: str | None
    ean: Ean | None
    ended_at: datetime | None

    @property
    def eligible(self) -> bool:
        return self.eligibility is Eligibility.ELIGIBLE


def assess(session: SessionRecord, context: SessionContext) -> Assessment:
    """Assess one session in its context; see the module docstring for the checks and order.

    EligibilityInputError if the context does not belong to the session (a mandate of another
    EAN, a "same connector" session of another connector).
    """
    _check_context(session, context)
    link = context.link
    customer_id = link.customer_id if link is not None else None
    ean = link.ean if link is not None else None
    ended_at = session.ended_at

    def ineligible(reason: Reason, detail: str) -> Assessment:
        return Assessment(
            session.session_id,
            Eligibility.INELIGIBLE,
            reason,
            detail,
            Decimal(0),
            customer_id,
            ean,
            ended_at,
        )

    failure = _first_failure(session, context)
    if failure is not None:
        return ineligible(*failure)
    assert session.energy_wh is not None  # guaranteed by the completeness check
    calc = exact()
    kwh = calc.subtract(session.energy_wh, session.exported_wh).scaleb(-3, context=calc)
    detail = f"{_kwh(session.energy_wh)} imported"
    if session.exported_wh:
        detail += f", {_kwh(session.exported_wh)} fed back: {kwh.normalize():f} kWh counted"
    return Assessment(
        session.session_id,
        Eligibility.ELIGIBLE,
        Reason.ELIGIBLE,
        detail,
        kwh,
        customer_id,
        ean,
        ended_at,
    )


def _first_failure(session: SessionRecord, context: SessionContext) -> tuple[Reason, str] | None:
    for check in (_not_duplicate, _finished, _complete, _in_order):
        failure = check(session)
        if failure is not None:
            return failure
    failure = _clock_agrees(session, context)
    if failure is not None:
        return failure
    for check in (_meter_forwards, _not_negative, _mid_evidence):
        failure = check(session)
        if failure is not None:
            return failure
    for contextual in (_linked, _mandated, _within_max_power, _alone_on_connector):
        failure = contextual(session, context)
        if failure is not None:
            return failure
    return None


def _not_duplicate(session: SessionRecord) -> tuple[Reason, str] | None:
    if session.duplicate_of is not None:
        return (
            Reason.DUPLICATE,
            f"the same charging event as session {session.duplicate_of}, which is kept"
            f" (this one's source: {session.source})",
        )
    return None


def _finished(session: SessionRecord) -> tuple[Reason, str] | None:
    if session.status is SessionStatus.ACTIVE:
        return Reason.NOT_FINISHED, "status is active"
    if session.status is SessionStatus.REJECTED:
        return Reason.REJECTED, "status is rejected"
    if session.status is SessionStatus.ORPHANED and session.stopped_at is None:
        if session.last_reading_wh is None or session.last_reading_at is None:
            return Reason.ORPHANED_WITHOUT_FINAL_READING, "orphaned with no energy register reading"
    return None


def _complete(session: SessionRecord) -> tuple[Reason, str] | None:
    missing = [
        name
        for name, value in (
            ("start time", session.started_at),
            ("end time", session.ended_at),
            ("energy", session.energy_wh),
        )
        if value is None
    ]
    if missing:
        return Reason.INCOMPLETE_RECORD, "no " + " and no ".join(missing)
    return None


def _in_order(session: SessionRecord) -> tuple[Reason, str] | None:
    assert session.started_at is not None and session.ended_at is not None
    if session.ended_at < session.started_at:
        return (
            Reason.ENDS_BEFORE_START,
            f"ends {session.ended_at.isoformat()}, starts {session.started_at.isoformat()}",
        )
    return None


def _clock_agrees(session: SessionRecord, context: SessionContext) -> tuple[Reason, str] | None:
    for what, stamped, received in (
        ("start", session.started_at, session.start_received_at),
        ("stop", session.stopped_at, session.stop_received_at),
    ):
        if stamped is None or received is None:
            continue
        if stamped - received > context.clock_ahead:
            return (
                Reason.CHARGER_CLOCK,
                f"{what} stamped {stamped.isoformat()}, {stamped - received} after its frame"
                f" arrived ({received.isoformat()}); more than {context.clock_ahead} ahead",
            )
        if received - stamped > context.max_clock_lag:
            return (
                Reason.CHARGER_CLOCK,
                f"{what} stamped {stamped.isoformat()} arrived {received - stamped} later"
                f" ({received.isoformat()}); longer than {context.max_clock_lag} of offline queue",
            )
    return None


def _meter_forwards(session: SessionRecord) -> tuple[Reason, str] | None:
    start, stop, last = session.meter_start_wh, session.meter_stop_wh, session.last_reading_wh
    if start is not None and stop is not None and stop < start:
        return Reason.METER_WENT_BACKWARDS, f"meter stop {stop} Wh is below meter start {start} Wh"
    if start is not None and last is not None and last < start:
        return (
            Reason.METER_WENT_BACKWARDS,
            f"last reading {last} Wh is below meter start {start} Wh",
        )
    last_at, stopped_at = session.last_reading_at, session.stopped_at
    if (
        stop is not None
        and last is not None
        and last_at is not None
        and stopped_at is not None
        and last_at <= stopped_at
        and stop < last
    ):
        return (
            Reason.METER_WENT_BACKWARDS,
            f"meter stop {stop} Wh is below an earlier reading of {last} Wh",
        )
    return None


def _not_negative(session: SessionRecord) -> tuple[Reason, str] | None:
    assert session.energy_wh is not None
    if session.energy_wh < 0:
        return Reason.NEGATIVE_ENERGY, f"imported energy {session.energy_wh} Wh"
    if session.exported_wh < 0:
        return Reason.NEGATIVE_ENERGY, f"exported energy {session.exported_wh} Wh"
    return None


def _mid_evidence(session: SessionRecord) -> tuple[Reason, str] | None:
    if session.meter_class not in MID_EVIDENCE:
        return Reason.NO_MID_EVIDENCE, f"meter class is {session.meter_class}"
    return None


def _linked(session: SessionRecord, context: SessionContext) -> tuple[Reason, str] | None:
    if context.link is None:
        return Reason.NOT_LINKED, f"charger {session.identity} has no customer"
    if context.link.ean is None:
        return (
            Reason.NO_EAN,
            f"customer {context.link.customer_id} has no EAN for charger {session.identity}",
        )
    return None


def _mandated(session: SessionRecord, context: SessionContext) -> tuple[Reason, str] | None:
    assert (
        context.link is not None and context.link.ean is not None and session.ended_at is not None
    )
    day = local_date(session.ended_at)
    covering = [mandate for mandate in context.mandates if mandate.covers(day)]
    customers = sorted({mandate.customer_id for mandate in covering})
    if len(customers) > 1:
        return (
            Reason.MANDATE_CONFLICT,
            f"on {day} EAN {context.link.ean} has mandates of {', '.join(customers)}",
        )
    if not customers:
        periods = ", ".join(
            f"{m.valid_from} to {m.valid_until}" for m in sorted(context.mandates, key=_period)
        )
        return Reason.NO_VALID_MANDATE, f"no mandate covers {day}" + (
            f" (mandates: {periods})" if periods else ""
        )
    if customers[0] != context.link.customer_id:
        return (
            Reason.NO_VALID_MANDATE,
            f"the mandate on {day} is customer {customers[0]}'s, the charger is linked to {context.link.customer_id}",
        )
    return None


def _within_max_power(session: SessionRecord, context: SessionContext) -> tuple[Reason, str] | None:
    assert (
        session.started_at is not None
        and session.ended_at is not None
        and session.energy_wh is not None
    )
    duration = session.ended_at - session.started_at
    calc = exact()
    possible_wh = wide().divide(
        calc.multiply(context.max_power_w, _seconds(duration)), _SECONDS_PER_HOUR
    )
    limit_wh = wide().add(possible_wh, context.margin_wh)
    for what, energy in (("imported", session.energy_wh), ("fed back", session.exported_wh)):
        if energy > limit_wh:
            return (
                Reason.EXCEEDS_MAX_POWER,
                f"{_kwh(energy)} {what} in {duration}; {context.max_power_w.normalize():f} W allows"
                f" {_kwh(possible_wh)} (+{context.margin_wh.normalize():f} Wh margin)",
            )
    return None


def _alone_on_connector(
    session: SessionRecord, context: SessionContext
) -> tuple[Reason, str] | None:
    assert session.started_at is not None and session.ended_at is not None
    start, end = session.started_at, session.ended_at
    for other in context.same_connector:
        if (
            other.session_id == session.session_id
            or other.status is SessionStatus.REJECTED
            or other.duplicate_of is not None
        ):
            continue
        other_start = other.started_at
        if other_start is None:
            continue
        other_end = other.ended_at or other_start
        if other_end < other_start:
            other_end = other_start
        if other_end == other_start:
            overlaps = start <= other_start < end
        else:
            overlaps = other_start < end and start < other_end
        if overlaps:
            named = (
                f"transaction {other.transaction_id} (session {other.session_id})"
                if other.transaction_id is not None
                else f"session {other.session_id} ({other.source})"
            )
            return (
                Reason.OVERLAPS_OTHER_SESSION,
                f"{named} runs from {other_start.isoformat()} to {other_end.isoformat()}",
            )
    return None


def _check_context(session: SessionRecord, context: SessionContext) -> None:
    if context.link is not None and context.link.ean is not None:
        for mandate in context.mandates:
            if mandate.ean != context.link.ean:
                raise EligibilityInputError(
                    f"session {session.session_id}: a mandate for EAN {mandate.ean} was given for EAN {context.link.ean}"
                )
    for other in context.same_connector:
        if _connector_of(other) != _connector_of(session):
            raise EligibilityInputError(
                f"session {session.session_id}: session {other.session_id} is on another connector"
                f" ({other.identity} evse {other.evse_id} connector {other.connector_id})"
            )


def _connector_of(session: SessionRecord) -> tuple[str, int | None, int | None]:
    return (session.identity, session.evse_id, session.connector_id)


def _seconds(duration: timedelta) -> Decimal:
    whole = duration.days * 86400 + duration.seconds
    return Decimal(whole) + Decimal(duration.microseconds).scaleb(-6)


def _kwh(wh: Decimal) -> str:
    return f"{wh.scaleb(-3, context=exact()).normalize():f} kWh"


def _period(mandate: Mandate) -> tuple[date, date]:
    return (mandate.valid_from, mandate.valid_until)
