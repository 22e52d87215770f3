"""The outbox's records and the policy's decisions: queued entries, offline transactions, the
shared budget, and what `ChargerOutbox` tells its shell to do (store, send, settle)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Entry:
    """One queued charger CALL: its action and payload exactly as the charger sent them."""

    seq: int
    action: str
    payload: bytes
    received_at: float
    attempts: int = 0  # replays answered with a CALLERROR so far
    proof: str = "unknown"  # how the link that queued it proved the charger's identity (PROOFS)
    sent: bool = False  # a 1.6 StartTransaction sent upstream whose answer was never recorded
    # The capture events its offline answer gave (msgpack), kept with it (see relay.py).
    captured: bytes | None = None


@dataclass
class Transaction:
    """An OCPP 1.6 transaction started offline: provisional id, and the real one once known."""

    provisional: int
    key: str  # content of its StartTransaction (see `start_key`)
    real: int | None = None
    ended: bool = False  # its StopTransaction has been sent upstream
    # its StartTransaction may have reached the back-office unanswered: parked
    in_doubt: bool = False


@dataclass(frozen=True)
class OfflineAnswer:
    """Send `frame` to the charger, after storing `entry` and `transaction` (when not None)."""

    frame: bytes
    entry: Entry | None = None
    transaction: Transaction | None = None


@dataclass(frozen=True)
class Full:
    """The CALL does not fit the outbox bounds: close the charger (1001); nothing is dropped."""

    reason: str


@dataclass(frozen=True)
class Send:
    """Send `frame` (a CALL under our own message id) upstream and wait for its answer.

    `mark_sent`: a 1.6 StartTransaction; store its `sent` mark durably before sending it.
    """

    entry: Entry
    frame: bytes
    mark_sent: bool = False


@dataclass(frozen=True)
class Completed:
    """The entry is done (answered, or a StartTransaction the back-office already had):
    delete it, and store `transaction` when it learned its real id."""

    entry: Entry
    transaction: Transaction | None = None


@dataclass(frozen=True)
class Retry:
    """The entry got a CALLERROR; store its `attempts` and send it again at `at`."""

    entry: Entry
    at: float


@dataclass(frozen=True)
class DeadLetter:
    """The entry failed `retry_attempts` times: park it with `reason`; replay goes on.
    A StopTransaction still ends its transaction (`transaction`, to store)."""

    entry: Entry
    reason: str
    transaction: Transaction | None = None


ReplayStep = Send | Completed | DeadLetter
ReplayOutcome = Completed | Retry | DeadLetter


class Budget:
    """Entries and bytes held by all outboxes (shared by the links of a process)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries = 0
        self.bytes = 0

    def fits(self, size: int) -> bool:
        return self.entries + 1 <= self.max_entries and self.bytes + size <= self.max_bytes

    def add(self, size: int) -> None:
        self.entries += 1
        self.bytes += size

    def remove(self, size: int) -> None:
        self.entries = max(0, self.entries - 1)
        self.bytes = max(0, self.bytes - size)
