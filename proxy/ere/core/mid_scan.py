"""The MID scan of one charger, sans-IO: does it qualify for ERE, why (not), and its yearly worth.

A partner's portfolio review asks, per charger, what the ERE close will make of it. `scan`
weighs what the partner declared about the charger (`Declared`, every field optional) and what
the proxy recorded of it for that partner (`Observed`; None when nothing: a charger the partner
has not registered or linked, one registered but never connected, one nobody knows, so all
three get one and the same answer) into a `ChargerVerdict`: `qualifies`, `needs_check` or
`does_not_qualify`, a machine `ScanReason`, a sentence saying why and what would change it, and
a yearly estimate.

The verdict follows the close's MID rule (`proxy.ere.core.eligibility`, check 7: sessions count
with meter class `signed-verified` or `declared`, never `signed-unverified` or `unknown`); the
first rule that applies decides:

1. recorded sessions carry signed readings that fail the meter's pinned key → `needs_check`
   (`signed-unverified`: those sessions do not count; a changed meter or key needs a look);
2. recorded sessions carry signed OCMF readings that verify → `qualifies` (`signed-verified`);
3. the charger's last boot names a meter model on the MID list, with its serial → `needs_check`
   (`charger-declared-mid-meter`): the close counts its sessions as `declared`, but a model
   name is a claim, not proof, until signed data or the meter's certificate confirms it;
4. the last boot names a listed model without a serial → `does_not_qualify`
   (`meter-serial-missing`: the close needs both), and a model not on the list →
   `does_not_qualify` (`meter-not-listed`);
5. without meter facts of the charger's own, the partner's declared `meter_type`: listed →
   `needs_check` (`partner-declared-mid-meter`: nothing verified yet; the charger must connect
   and report it), not listed → `does_not_qualify` (`meter-not-listed`);
6. nothing → `does_not_qualify`: `not-seen` for an identity the proxy has no record of for the
   partner, `no-meter-facts` otherwise.

The charger's own vendor, model and firmware decide nothing: no list says which chargers have a
MID meter built in. The MID list is `proxy.capture.evidence.MidMeterList` (patterns of meter
models; the caller chooses the file).

Yearly kWh (`KwhBasis`): observed over the window (the last `WINDOW_DAYS` days the charger was
the partner's) when the proxy saw it that whole window (`observed`); scaled to a year when it saw
it at least `MIN_OBSERVED_DAYS` days (`observed-annualised`, kWh × 365 / days, to the Wh); else
the partner's `kwh_per_year` (`declared`); else none (0). A negative figure (a charger that fed
more back than it took) counts as 0. The estimate is kWh × the price per kWh, to the cent, half
up, whatever the verdict: for a charger that does not qualify, what it would earn once it does.

Errors: a caller's inconsistent input (a float, a negative declared kWh or price, a naive time)
raises TypeError or ValueError; every fact about the charger gives a verdict, never an error.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from proxy.capture.evidence import MidMeterList
from proxy.ere.core.rounding import ROUNDING, exact, require_decimal, to_cents, wide

__all__ = [
    "MIN_OBSERVED_DAYS",
    "WINDOW_DAYS",
    "ChargerVerdict",
    "Declared",
    "KwhBasis",
    "Observed",
    "ScanReason",
    "Totals",
    "Verdict",
    "VerdictTotal",
    "scan",
    "total",
]

WINDOW_DAYS = 365
MIN_OBSERVED_DAYS = 30
_WH = Decimal("0.001")
_ZERO_KWH = Decimal("0.000")


class Verdict(enum.StrEnum):
    QUALIFIES = "qualifies"
    NEEDS_CHECK = "needs_check"
    DOES_NOT_QUALIFY = "does_not_qualify"


class ScanReason(enum.StrEnum):
    """Why a charger got its verdict (see the module docstring for the rules)."""

    SIGNED_VERIFIED = "signed-verified"
    SIGNED_UNVERIFIED = "signed-unverified"
    CHARGER_DECLARED_MID_METER = "charger-declared-mid-meter"
    PARTNER_DECLARED_MID_METER = "partner-declared-mid-meter"
    METER_SERIAL_MISSING = "meter-serial-missing"
    METER_NOT_LISTED = "meter-not-listed"
    NOT_SEEN = "not-seen"
    NO_METER_FACTS = "no-meter-facts"


class KwhBasis(enum.StrEnum):
    OBSERVED = "observed"
    OBSERVED_ANNUALISED = "observed-annualised"
    DECLARED = "declared"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Declared:
    """What the partner says about a charger; text already cleaned (stripped, None if empty)."""

    identity: str | None = None
    meter_type: str | None = None
    meter_serial: str | None = None
    kwh_per_year: Decimal | None = None

    def __post_init__(self) -> None:
        if self.kwh_per_year is not None:
            if require_decimal(self.kwh_per_year, "kwh_per_year") < 0:
                raise ValueError(f"kwh_per_year must not be negative, got {self.kwh_per_year}")


@dataclass(frozen=True, slots=True)
class Observed:
    """What the proxy recorded of one of the partner's chargers.

    `since` is where the window starts: the latest of `as_of` − `WINDOW_DAYS`, the charger's
    first recorded event and the moment it became the partner's. The session counts and
    `energy_wh` (finished sessions; sessions another partner's customer was linked to at their
    end left out) are of that window; `meter_type` and `meter_serial` are of its last boot
    (None: no boot recorded, or the charger did not say).
    """

    since: datetime
    meter_type: str | None = None
    meter_serial: str | None = None
    verified_sessions: int = 0
    unverified_sessions: int = 0
    energy_wh: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.since.utcoffset() is None:
            raise ValueError("since must carry a UTC offset")
        require_decimal(self.energy_wh, "energy_wh")
        if self.verified_sessions < 0 or self.unverified_sessions < 0:
            raise ValueError("session counts must not be negative")


@dataclass(frozen=True, slots=True)
class ChargerVerdict:
    verdict: Verdict
    reason: ScanReason
    text: str
    kwh_basis: KwhBasis
    observed_kwh: Decimal | None  # over the window; None: not observed
    observed_days: int | None  # whole days of the window; None: not observed
    kwh_per_year: Decimal
    eur_per_year: Decimal


@dataclass(frozen=True, slots=True)
class VerdictTotal:
    chargers: int
    kwh_per_year: Decimal
    eur_per_year: Decimal


@dataclass(frozen=True, slots=True)
class Totals:
    chargers: int
    by_verdict: dict[Verdict, VerdictTotal]


def scan(
    declared: Declared,
    observed: Observed | None,
    *,
    as_of: datetime,
    price_per_kwh: Decimal,
    mid_meters: MidMeterList,
) -> ChargerVerdict:
    """The verdict on one charger (see the module docstring)."""
    if as_of.utcoffset() is None:
        raise ValueError("as_of must carry a UTC offset")
    if require_decimal(price_per_kwh, "price_per_kwh") < 0:
        raise ValueError(f"price_per_kwh must not be negative, got {price_per_kwh}")
    verdict, reason, text = _weigh(declared, observed, mid_meters)
    days = None if observed is None else _days(observed.since, as_of)
    observed_kwh = None if observed is None else _observed_kwh(observed.energy_wh)
    basis, kwh = _yearly_kwh(declared, observed_kwh, days)
    eur = to_cents(exact().multiply(kwh, price_per_kwh))
    return ChargerVerdict(verdict, reason, text, basis, observed_kwh, days, kwh, eur)


def total(verdicts: Iterable[ChargerVerdict]) -> Totals:
    """Chargers, yearly kWh and euros per verdict (every verdict present, zero if none)."""
    counts = dict.fromkeys(Verdict, 0)
    kwh = dict.fromkeys(Verdict, _ZERO_KWH)
    eur = dict.fromkeys(Verdict, Decimal("0.00"))
    calc = exact()
    for one in verdicts:
        counts[one.verdict] += 1
        kwh[one.verdict] = calc.add(kwh[one.verdict], one.kwh_per_year)
        eur[one.verdict] = calc.add(eur[one.verdict], one.eur_per_year)
    by_verdict = {v: VerdictTotal(counts[v], kwh[v], eur[v]) for v in Verdict}
    return Totals(sum(counts.values()), by_verdict)


def _weigh(
    declared: Declared, observed: Observed | None, mid_meters: MidMeterList
) -> tuple[Verdict, ScanReason, str]:
    if observed is not None:
        verified, unverified = observed.verified_sessions, observed.unverified_sessions
        if unverified:
            also = f"; {verified} other session(s) verified" if verified else ""
            return (
                Verdict.NEEDS_CHECK,
                ScanReason.SIGNED_UNVERIFIED,
                f"{unverified} session(s) carry signed readings that do not verify with the "
                f"meter's pinned key (a failed signature or a changed meter){also}; such sessions "
                "do not count for ERE: have the meter and its key checked",
            )
        if verified:
            return (
                Verdict.QUALIFIES,
                ScanReason.SIGNED_VERIFIED,
                f"signed OCMF readings seen and verified with the meter's key in {verified} "
                "session(s)",
            )
        if observed.meter_type is not None:
            return _charger_meter(observed.meter_type, observed.meter_serial, mid_meters)
    if declared.meter_type is not None:
        return _partner_meter(declared, mid_meters)
    if observed is not None:
        return (
            Verdict.DOES_NOT_QUALIFY,
            ScanReason.NO_METER_FACTS,
            "the charger reports no meter type and sent no signed readings; it would qualify "
            "with signed OCMF readings, or by reporting a MID-certified meter model and its "
            "serial number at boot",
        )
    if declared.identity is not None:
        return (
            Verdict.DOES_NOT_QUALIFY,
            ScanReason.NOT_SEEN,
            f"the proxy has no record of charger {declared.identity!r} for you and no meter "
            "was declared: register or link it and connect it through the proxy, or declare "
            "its meter_type",
        )
    return (
        Verdict.DOES_NOT_QUALIFY,
        ScanReason.NO_METER_FACTS,
        "no meter declared: declare the charger's built-in meter (meter_type, meter_serial) or "
        "connect the charger through the proxy",
    )


def _charger_meter(
    meter_type: str, serial: str | None, mid_meters: MidMeterList
) -> tuple[Verdict, ScanReason, str]:
    listed = mid_meters.match(meter_type)
    if listed is None:
        return _not_listed(meter_type, "the charger reports")
    if serial is None:
        return (
            Verdict.DOES_NOT_QUALIFY,
            ScanReason.METER_SERIAL_MISSING,
            f"the charger reports MID meter model {meter_type!r} ({listed.vendor}) but no meter "
            "serial number at boot; its sessions count once it reports one (firmware or "
            "configuration) or sends signed OCMF readings",
        )
    return (
        Verdict.NEEDS_CHECK,
        ScanReason.CHARGER_DECLARED_MID_METER,
        f"the charger reports meter {meter_type!r} (serial {serial!r}) at boot, a model on the "
        f"MID meter list ({listed.vendor}); its sessions count as declared MID evidence, not yet "
        "verified by signed data: confirm the meter's MID certificate (type plate)",
    )


def _partner_meter(declared: Declared, mid_meters: MidMeterList) -> tuple[Verdict, ScanReason, str]:
    meter_type = declared.meter_type
    assert meter_type is not None
    listed = mid_meters.match(meter_type)
    if listed is None:
        return _not_listed(meter_type, "declared")
    serial = f" (serial {declared.meter_serial!r})" if declared.meter_serial else ""
    return (
        Verdict.NEEDS_CHECK,
        ScanReason.PARTNER_DECLARED_MID_METER,
        f"declared MID meter model {meter_type!r}{serial}, on the MID meter list "
        f"({listed.vendor}); not yet verified by signed data: connect the charger through the "
        "proxy; its sessions count once it reports this meter with its serial number at boot "
        "or sends signed OCMF readings",
    )


def _not_listed(meter_type: str, whose: str) -> tuple[Verdict, ScanReason, str]:
    return (
        Verdict.DOES_NOT_QUALIFY,
        ScanReason.METER_NOT_LISTED,
        f"meter {meter_type!r} ({whose}) is not on the MID meter list; it would qualify with "
        "signed OCMF readings, or once the operator adds the model to the list after checking "
        "its MID certificate",
    )


def _days(since: datetime, as_of: datetime) -> int:
    return max(0, min(WINDOW_DAYS, (as_of - since).days))


def _yearly_kwh(
    declared: Declared, observed_kwh: Decimal | None, days: int | None
) -> tuple[KwhBasis, Decimal]:
    if observed_kwh is not None and days is not None and days >= MIN_OBSERVED_DAYS:
        if days >= WINDOW_DAYS:
            return KwhBasis.OBSERVED, _kwh(observed_kwh)
        scaled = wide().divide(wide().multiply(observed_kwh, WINDOW_DAYS), days)
        return KwhBasis.OBSERVED_ANNUALISED, _kwh(scaled)
    if declared.kwh_per_year is not None:
        return KwhBasis.DECLARED, _kwh(declared.kwh_per_year)
    return KwhBasis.NONE, _ZERO_KWH


def _observed_kwh(wh: Decimal) -> Decimal:
    """Wh as kWh, exact, in three places or as many more as it needs (10000.000 Wh: 10.000)."""
    value = wh.scaleb(-3, context=exact()).normalize(context=exact())
    if value.as_tuple().exponent >= -3:  # type: ignore[operator]  # finite: an int
        value = value.quantize(_WH, context=exact())
    return value


def _kwh(value: Decimal) -> Decimal:
    """kWh to the Wh, half up; never negative."""
    return max(value, Decimal(0)).quantize(_WH, rounding=ROUNDING, context=wide())
