"""The rules between the sessions of one batch (a CSV file, a push): each bad one found once.

`check_batch(sessions)` takes the records of a batch that passed `records.check`, in batch
order, and returns a `BatchProblem` for each that breaks a rule against another one, naming
that other one by its position:

- the same id (`source_ref`) twice: a repeat of the same record is a duplicate row, other
  content under one id a contradiction;
- the same charging event twice under different ids (`proxy.ingest.dedup.same_event`);
- two sessions of one charger that overlap in time (a charger charges one car at a time
  through one supply: one of the two is wrong);
- a meter that went backwards from one session to the next of a charger: a session's meter
  start below the meter stop of the session before it.

The later session of a pair (in time; for ids, in the batch) is the one reported. Pure; sorts
once per charger.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from proxy.ingest.dedup import Charge, same_event
from proxy.ingest.records import ExternalSession, fingerprint

__all__ = ["BatchProblem", "check_batch"]


@dataclass(frozen=True, slots=True)
class BatchProblem:
    """The session at `position` breaks a rule against the one at `other` (0-based)."""

    position: int
    other: int
    field: str  # the ExternalSession attribute the rule is about
    detail: str  # says what, with `{other}` where the other session is to be named


def check_batch(sessions: Sequence[ExternalSession]) -> list[BatchProblem]:
    """The problems of `sessions` (see the module docstring), by position."""
    problems: dict[int, BatchProblem] = {}
    first: dict[str, tuple[int, str]] = {}
    for position, session in enumerate(sessions):
        mark = fingerprint(session)
        seen = first.setdefault(session.source_ref, (position, mark))
        if seen[0] != position:
            detail = (
                "repeats {other}"
                if seen[1] == mark
                else "has the same id as {other}, with other content"
            )
            problems[position] = BatchProblem(position, seen[0], "source_ref", detail)
    by_charger: dict[str, list[int]] = defaultdict(list)
    for position, session in enumerate(sessions):
        if position not in problems:
            by_charger[session.identity].append(position)
    # In UTC: times of one zone compare by their wall clock, the repeated hour's included.
    spans = [(s.started_at.astimezone(UTC), s.stopped_at.astimezone(UTC)) for s in sessions]
    for positions in by_charger.values():
        positions.sort(key=lambda p: (spans[p][0], p))
        _in_time(sessions, spans, positions, problems)
    return sorted(problems.values(), key=lambda problem: problem.position)


def _in_time(
    sessions: Sequence[ExternalSession],
    spans: Sequence[tuple[datetime, datetime]],
    positions: list[int],
    problems: dict[int, BatchProblem],
) -> None:
    """Overlaps and meters going backwards along one charger's sessions, sorted by start."""
    latest: int | None = None  # the session ending last so far
    metered: int | None = None  # the last session with a meter stop
    for position in positions:
        session = sessions[position]
        if latest is not None and spans[latest][1] > spans[position][0]:
            if same_event(_charge(sessions, spans, latest), _charge(sessions, spans, position)):
                detail = "is the same charging event as {other} (same charger, time and energy)"
            else:
                detail = "overlaps {other} on the same charger"
            problems[position] = BatchProblem(position, latest, "started_at", detail)
            continue
        stop = None if metered is None else sessions[metered].meter_stop_wh
        if (
            stop is not None
            and session.meter_start_wh is not None
            and session.meter_start_wh < stop
        ):
            assert metered is not None
            problems[position] = BatchProblem(
                position,
                metered,
                "meter_start_wh",
                f"{session.meter_start_wh.normalize():f} Wh is below the meter stop"
                f" {stop.normalize():f} Wh of {{other}}: the meter went backwards",
            )
        if latest is None or spans[position][1] > spans[latest][1]:
            latest = position
        if session.meter_stop_wh is not None and position not in problems:
            metered = position


def _charge(
    sessions: Sequence[ExternalSession], spans: Sequence[tuple[datetime, datetime]], position: int
) -> Charge:
    """`same_event` compares sessions by source: here every one is of the batch's."""
    started, stopped = spans[position]
    return Charge(
        position,
        sessions[position].identity,
        "batch",
        started,
        stopped,
        sessions[position].energy_wh,
        "",
    )
