"""The progress line of a long import: rows done, rows a second and the time left.

`Progress(total, clock=, tty=)` is told how many rows a phase has done (`update(phase, done)`)
and answers the text to show, or None when nothing needs showing yet, so showing it costs
nothing per row:

- on a terminal (`tty`), a bar redrawn in place (`\\r`, no newline) at most every
  `TTY_INTERVAL` seconds: `checking [#####.....] 52,000/100,000 rows  48,100 rows/s  ETA 0:01`;
- otherwise (a log, a pipe) a plain line at most every `PLAIN_INTERVAL` seconds;
- `finish(phase, done)` gives the phase's last line (ending the bar's line on a terminal).

The rate is the phase's average since it began; the time left is what remains at that rate.
Pure: the clock is a function the caller gives (e.g. `time.monotonic`).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["PLAIN_INTERVAL", "TTY_INTERVAL", "Progress"]

TTY_INTERVAL = 0.1
PLAIN_INTERVAL = 5.0
_BAR = 20


class Progress:
    def __init__(self, total: int, *, clock: Callable[[], float], tty: bool) -> None:
        self.total, self._clock, self._tty = max(total, 0), clock, tty
        self._phase: str | None = None
        self._began = self._shown = 0.0

    def update(self, phase: str, done: int) -> str | None:
        """The text to show now for `done` rows of `phase`, or None (too soon since the last)."""
        now = self._clock()
        if phase != self._phase:
            self._phase, self._began, self._shown = phase, now, now
            return self._text(phase, done, now)
        if now - self._shown < (TTY_INTERVAL if self._tty else PLAIN_INTERVAL):
            return None
        self._shown = now
        return self._text(phase, done, now)

    def finish(self, phase: str, done: int) -> str:
        """The last text of `phase`, always given."""
        if phase != self._phase:
            self._phase, self._began = phase, self._clock()
        text = self._text(phase, done, self._clock())
        return text + "\n" if self._tty else text

    def _text(self, phase: str, done: int, now: float) -> str:
        total = max(self.total, done)
        elapsed = now - self._began
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f"ETA {_clock_time((total - done) / rate)}" if rate > 0 else "ETA -"
        counts = f"{done:,}/{total:,} rows  {rate:,.0f} rows/s  {left}"
        if not self._tty:
            share = f" ({100 * done // total}%)" if total else ""
            return f"{phase}: {counts}{share}"
        filled = _BAR * done // total if total else _BAR
        return f"\r{phase} [{'#' * filled}{'.' * (_BAR - filled)}] {counts}\x1b[K"


def _clock_time(seconds: float) -> str:
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
