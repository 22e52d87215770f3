"""Calendar quarters, the period of every statement and payout.

A quarter is written `YYYYQn` ("2026Q3"), nothing else: it is a key in statements, files and
URLs, so one spelling keeps them comparable. `Quarter.parse` refuses any other spelling with a
`QuarterFormatError` that says what is wrong ("2026Q5": there is no fifth quarter).

Boundaries are Dutch local time (Europe/Amsterdam): a quarter starts at 00:00 on 1 January,
1 April, 1 July or 1 October as a Dutch owner's calendar shows it, and ends where the next one
starts. Intervals are half-open, so the instant 2026-07-01T00:00+02:00 (22:00 UTC on 30 June)
belongs to 2026Q3 and not to 2026Q2. Instants must be time-zone aware; a naive datetime is a
`ValueError`, because guessing its zone would move sessions between quarters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

__all__ = ["DUTCH_TIME", "Quarter", "QuarterFormatError", "local_date"]

DUTCH_TIME = ZoneInfo("Europe/Amsterdam")

_CANONICAL = re.compile(r"([1-9][0-9]{3})Q([1-4])", re.ASCII)
_QUARTER_LIKE = re.compile(r"([0-9]+)\s*[-_ /]?\s*[Qq]\s*([0-9]+)", re.ASCII)


class QuarterFormatError(ValueError):
    """A quarter string that is not `YYYYQn` with n from 1 to 4; the message says why."""


def _require_aware(instant: datetime) -> None:
    if not isinstance(instant, datetime):
        raise TypeError(f"expected a datetime, got {type(instant).__name__}")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant.isoformat()} has no time zone; give an aware datetime")


def local_date(instant: datetime) -> date:
    """The calendar date of an aware instant in Dutch local time (ValueError if naive)."""
    _require_aware(instant)
    return instant.astimezone(DUTCH_TIME).date()


@dataclass(frozen=True, order=True, slots=True)
class Quarter:
    """One calendar quarter; ordered by time, printed as `2026Q3`.

    Constructing one with a year outside 1000-9999 or a number outside 1-4 raises
    `QuarterFormatError`.
    """

    year: int
    number: int

    def __post_init__(self) -> None:
        if not isinstance(self.year, int) or not 1000 <= self.year <= 9999:
            raise QuarterFormatError(f"year must have four digits (1000-9999), got {self.year!r}")
        if not isinstance(self.number, int) or not 1 <= self.number <= 4:
            raise QuarterFormatError(f"quarter number must be 1 to 4, got {self.number!r}")

    @classmethod
    def parse(cls, text: str) -> Quarter:
        """Read `YYYYQn`; anything else raises QuarterFormatError naming the problem."""
        if not isinstance(text, str):
            raise TypeError(
                f"a quarter is written as text like '2026Q3', got {type(text).__name__}"
            )
        match = _CANONICAL.fullmatch(text)
        if match:
            return cls(int(match[1]), int(match[2]))
        raise QuarterFormatError(f"{text!r} is not a quarter: {_what_is_wrong(text)}")

    @classmethod
    def containing(cls, instant: datetime) -> Quarter:
        """The quarter an aware instant falls in, by Dutch local time (ValueError if naive)."""
        day = local_date(instant)
        return cls(day.year, (day.month - 1) // 3 + 1)

    @property
    def first_day(self) -> date:
        """The first calendar day of the quarter."""
        return date(self.year, 3 * self.number - 2, 1)

    @property
    def last_day(self) -> date:
        """The last calendar day of the quarter."""
        return date.fromordinal(self.next().first_day.toordinal() - 1)

    @property
    def start(self) -> datetime:
        """The first instant of the quarter: 00:00 Dutch local time on its first day."""
        first = self.first_day
        return datetime(first.year, first.month, first.day, tzinfo=DUTCH_TIME)

    @property
    def end(self) -> datetime:
        """The first instant after the quarter (the next quarter's start); not inside it."""
        return self.next().start

    def contains(self, instant: datetime) -> bool:
        """True if `start <= instant < end` (ValueError if the instant is naive)."""
        _require_aware(instant)
        return self.start <= instant < self.end

    def next(self) -> Quarter:
        """The quarter after this one."""
        if self.number == 4:
            return Quarter(self.year + 1, 1)
        return Quarter(self.year, self.number + 1)

    def previous(self) -> Quarter:
        """The quarter before this one."""
        if self.number == 1:
            return Quarter(self.year - 1, 4)
        return Quarter(self.year, self.number - 1)

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"


def _what_is_wrong(text: str) -> str:
    """A short explanation for a string that is not a canonical quarter."""
    stripped = text.strip()
    if stripped != text and _CANONICAL.fullmatch(stripped):
        return "remove the surrounding spaces"
    match = _QUARTER_LIKE.fullmatch(stripped)
    if match is None:
        return "expected a four-digit year, 'Q' and a quarter number, e.g. '2026Q3'"
    year, number = match[1], match[2]
    if len(year) != 4 or year.startswith("0"):
        return f"the year must have four digits (1000-9999), got {year!r}"
    if not 1 <= int(number) <= 4 or len(number) != 1:
        return f"a year has quarters 1 to 4, got {number!r}"
    return f"write it as '{year}Q{number}' (upper-case Q, no separator)"
