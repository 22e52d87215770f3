"""The native forwarding engine of a worker, and the task through which Python hears from it.

A `Link` between two plain TCP sockets hands its steady state to the engine (`proxy._codec.Engine`,
a thread of its own with an epoll loop): bytes move without waking Python per frame. Python hears
from it in batches, one wake-up per batch (`run`): the OCPP messages session capture and the
outbox need (the tracked actions' CALLs and their answers), the copies of a mirrored charger's
CALLs and SENDs, and links handed back; the counters for the metrics ride along. The engine paces
its signals, so this task only waits for its socket: a batch of reports comes at once after a
quiet spell and then at most every `BATCH_WINDOW` while they keep coming, counters alone every
`COUNTS_INTERVAL` (a Trio timer per wake-up cost a seventh of a capturing worker's Python). Each
link's own task waits for its hand-back (parked on its `Turn`), so cancellation, shutdown and
replacement keep their structured-concurrency semantics: a cancelled link asks for its sockets
back (`release`) and goes on waiting until it has them.

If the engine's thread ever fails, every link is handed back as "panicked" and the worker goes
on with the Python path for new links (`broken`). When this task ends, the engine stops: what it
forwarded last still reaches capture and the metrics, and every link comes back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import count
from typing import Protocol

import trio

from proxy._codec import Engine, Handback
from proxy.runtime.metrics import DirectionMeters
from proxy.wire.codec import FrameReader, Message

log = logging.getLogger("proxy.engine")

CHARGER, UPSTREAM = 0, 1
COUNTS_INTERVAL = 1.0  # seconds: how stale the forwarding metrics may be
BATCH_WINDOW = 0.002  # seconds from one take to the next batch of reports, at least

# tracked messages one side sent that were forwarded: (link, side, at, messages)
Passed = tuple[int, int, float, list[Message]]
# one direction's (bytes, [(opcode, message_type, n)], [(action, n)], per-bucket counts, seconds)
DirectionCounts = tuple[int, list[tuple[int, int, int]], list[tuple[str, int]], list[int], float]


class Forwarded(Protocol):
    """What the engine reports to about a link while it holds it."""

    def passed_natively(self, side: int, messages: list[Message], at: float) -> None: ...


@dataclass(eq=False, slots=True)
class Turn:
    """One stay of a link in the engine; `handback` is known once the engine lets go of it.

    The link's task parks itself on the turn (`if turn.parks(): await
    trio.lowlevel.wait_task_rescheduled(turn)`, the turn its abort function) rather than on an
    Event, and not in a function of its own: an idle link in the engine is held by thousands,
    and every object and frame it keeps counts. Cancelled meanwhile, the link is asked back
    (`__call__`) and still awaited: the engine lets go of a link at once, and hands every link
    back as it stops, rescheduling the waiter. The cancellation is then the waiter's to meet at
    its next checkpoint, with the link in its hands.
    """

    link: int
    owner: Forwarded
    engine: ForwardingEngine
    handback: Handback | None = None
    waiter: trio.lowlevel.Task | None = None

    def parks(self) -> bool:
        """Whether the calling task must park to wait for the link (it is not back yet); if
        so, the task is the one to reschedule when it is."""
        if self.handback is not None:
            return False
        self.waiter = trio.lowlevel.current_task()
        return True

    def __call__(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        """Cancelled while parked: ask for the link back; the task wakes when it is back."""
        self.engine.release(self)
        return trio.lowlevel.Abort.FAILED


class ForwardingEngine:
    """A worker's engine; `run` must be running (in a nursery outliving the links) while in use.

    `meters`: the two directions' metric children (charger → upstream, upstream → charger).
    """

    def __init__(self, meters: tuple[DirectionMeters, DirectionMeters]) -> None:
        self._meters = meters
        self._engine = Engine(list(_bounds(meters[0])), BATCH_WINDOW, COUNTS_INTERVAL)
        self._turns: dict[int, Turn] = {}
        self._ids = count(1)
        self.adopted = 0  # links handed to the engine so far
        self.broken = False

    def adopt(
        self,
        owner: Forwarded,
        fds: tuple[int, int],
        readers: tuple[FrameReader, FrameReader],
        trailing: tuple[bytes, bytes],
        pending: tuple[list[str], list[str]],
        tracked: frozenset[str],
        keep_last_call: bool,
        copy_charger: bool = False,
    ) -> Turn | None:
        """Hand a link over; park on the `Turn` until it comes back (see `release`). None: the
        engine has stopped, the link stays with the caller (its readers untouched).
        `copy_charger`: report every CALL and SEND of the charger too (its mirrors' copies)."""
        turn = Turn(next(self._ids), owner, self)
        try:
            self._engine.adopt(
                turn.link, fds, readers, trailing, pending, tracked, keep_last_call, copy_charger
            )
        except RuntimeError:
            self.broken = True
            return None
        self._turns[turn.link] = turn
        self.adopted += 1
        return turn

    def release(self, turn: Turn) -> None:
        """Ask for a link back now; its task is rescheduled when it is."""
        if turn.handback is None:
            try:
                self._engine.release(turn.link)
            except ValueError:
                pass  # closed: the engine handed every link back as it closed

    def idle_seconds(self, turn: Turn) -> float | None:
        return self._engine.idle_seconds(turn.link)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hear from the engine until cancelled; then stop it and hand every link back."""
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(self._engine.fileno())
                if self._dispatch(*self._engine.take()) and not self._engine.running():
                    self.broken = True  # its links come back; new ones stay in Python
        finally:
            self.broken = True
            self._dispatch(*self._engine.close())

    def _dispatch(
        self,
        reports: list[Passed | Handback],
        counters: tuple[DirectionCounts, DirectionCounts],
    ) -> bool:
        """Hand each report to its link, counts to the metrics; True if there was a report."""
        for report in reports:
            if isinstance(report, Handback):
                self._settle([report])
            else:
                link, side, at, messages = report
                turn = self._turns.get(link)
                if turn is not None:
                    _call_safely(turn.owner, side, messages, at)
        for meters, figures in zip(self._meters, counters, strict=True):
            _add_counts(meters, figures)
        return bool(reports)

    def _settle(self, handbacks: list[Handback]) -> None:
        for handback in handbacks:
            turn = self._turns.pop(handback.link, None)
            if turn is not None:
                if handback.why == "panicked":
                    log.error("forwarding engine failed serving a link")
                turn.handback = handback
                if turn.waiter is not None:
                    trio.lowlevel.reschedule(turn.waiter)
                    turn.waiter = None


def _call_safely(owner: Forwarded, side: int, messages: list[Message], at: float) -> None:
    """One link's failure to take its messages never stops the others' (it is logged)."""
    try:
        owner.passed_natively(side, messages, at)
    except Exception:
        log.exception("handling forwarded messages failed")


def _bounds(meters: DirectionMeters) -> list[float]:
    return list(meters.forward_seconds._upper_bounds)


def _add_counts(meters: DirectionMeters, figures: DirectionCounts) -> None:
    """Add the engine's counts of one direction to its metrics."""
    sent, frames, calls, buckets, seconds = figures
    if sent:
        meters.bytes.inc(sent)
    for opcode, message_type, n in frames:
        meters.add_frames(opcode, message_type, n)
    for action, n in calls:
        meters.add_calls(action or None, n)
    if any(buckets):
        # prometheus_client has no bulk observe: add to the child's buckets and sum directly
        # (checked by the engine's metric tests against the exposed samples).
        histogram = meters.forward_seconds
        for value, n in zip(histogram._buckets, buckets, strict=True):
            if n:
                value.inc(n)
        histogram._sum.inc(seconds)
