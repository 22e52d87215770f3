"""When two sessions are the same charging event, and which one counts.

A charging event may reach the books twice: captured from the charger's OCPP traffic and
supplied by its partner (an OCPI CDR, a push, a CSV row), or supplied twice under different ids.
Two sessions are the same event (`same_event`) when:

- they are of the same charger;
- their times overlap ([start, stop) intervals, or the same start);
- their energy agrees within 0.5 % of the larger figure or 100 Wh, whichever is more;
- they are not both captured over OCPP (a charger's transactions are distinct by definition).

Of the sessions of one event, one is kept (`rank`, lowest first): a captured (OCPP) session
first, then a signed one over an unsigned one (verified over unverified), then the one received
first (the lower session id). Every other is a duplicate of a kept one (`find_duplicates`).

Pure and linear in the number of sessions (sorted once per charger).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

__all__ = [
    "ABSOLUTE_TOLERANCE_WH",
    "RELATIVE_TOLERANCE",
    "Charge",
    "find_duplicates",
    "rank",
    "same_event",
]

RELATIVE_TOLERANCE = Decimal("0.005")
ABSOLUTE_TOLERANCE_WH = Decimal(100)
_SIGNED_RANK = {"signed-verified": 0, "signed-unverified": 1}


@dataclass(frozen=True, slots=True)
class Charge:
    """One session as the rule sees it; `session_id` orders sessions by when they arrived."""

    session_id: int
    identity: str
    source: str
    started_at: datetime
    stopped_at: datetime
    energy_wh: Decimal
    meter_class: str


def same_event(a: Charge, b: Charge) -> bool:
    """Whether `a` and `b` are the same charging event (see the module docstring)."""
    if a.identity != b.identity or a.source == b.source == "ocpp":
        return False
    overlap = a.started_at == b.started_at or (
        a.started_at < b.stopped_at and b.started_at < a.stopped_at
    )
    if not overlap:
        return False
    larger = max(abs(a.energy_wh), abs(b.energy_wh))
    return abs(a.energy_wh - b.energy_wh) <= max(larger * RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE_WH)


def rank(charge: Charge) -> tuple[int, int, int]:
    """Lower is kept: OCPP first, then signed (verified, unverified), then the earliest."""
    return (
        0 if charge.source == "ocpp" else 1,
        _SIGNED_RANK.get(charge.meter_class, 2),
        charge.session_id,
    )


def find_duplicates(charges: Iterable[Charge]) -> dict[int, int]:
    """{duplicate's session id: the kept session's id} among `charges`.

    Sessions are taken best rank first; each that is the same event as one kept already is a
    duplicate of the best-ranked such one, else it is kept. Only sessions whose times overlap
    are compared (per charger, sorted by start), so ordinary data costs one sort.
    """
    by_charger: dict[str, list[Charge]] = defaultdict(list)
    for charge in charges:
        by_charger[charge.identity].append(charge)
    duplicates: dict[int, int] = {}
    for group in by_charger.values():
        for cluster in _overlapping(group):
            if len(cluster) > 1:
                duplicates |= _within(cluster)
    return duplicates


def _overlapping(group: list[Charge]) -> Iterable[list[Charge]]:
    """The runs of sessions whose times chain together, sorted by start."""
    ordered = sorted(group, key=lambda c: (c.started_at, c.session_id))
    cluster: list[Charge] = []
    end: datetime | None = None
    for charge in ordered:
        apart = end is not None and charge.started_at >= end
        if cluster and apart and charge.started_at != cluster[-1].started_at:
            yield cluster
            cluster, end = [], None
        cluster.append(charge)
        end = charge.stopped_at if end is None else max(end, charge.stopped_at)
    if cluster:
        yield cluster


def _within(cluster: list[Charge]) -> dict[int, int]:
    """Best rank first: a duplicate of the best-ranked kept twin, else kept. Kept sessions are
    held by start, so each is compared only with those that can overlap it."""
    starts: list[datetime] = []
    kept: list[Charge] = []
    longest = max(c.stopped_at - c.started_at for c in cluster)
    duplicates = {}
    for charge in sorted(cluster, key=rank):
        low = bisect.bisect_left(starts, charge.started_at - longest)
        high = bisect.bisect_right(starts, charge.stopped_at)
        twins = [k for k in kept[low:high] if same_event(k, charge)]
        if twins:
            duplicates[charge.session_id] = min(twins, key=rank).session_id
        else:
            at = bisect.bisect_right(starts, charge.started_at)
            starts.insert(at, charge.started_at)
            kept.insert(at, charge)
    return duplicates
