"""Outbox policy (sans-IO): a charger's CALLs while its upstream is unreachable, and their replay.

While the upstream cannot be reached the proxy answers the charger itself (`offline_call`) the
way a back-office would, and every CALL it answers becomes an `Entry` of the charger's outbox.
When the upstream is back, `next_replay` and `replay_answer` send the entries in order, one
outstanding CALL at a time, under message ids of our own. The Trio shell (`proxy.forward.relay`) persists
what these methods return before acting on it (an entry is stored before the charger gets its
answer; a replayed entry is deleted before the next one goes out) and does all the I/O; this
module has no I/O and no clock (`now` is passed in, Unix seconds).

Transaction ids (OCPP 1.6): an offline StartTransaction gets a provisional transactionId,
`provisional_id_base + seq`. When its replay is answered the real id is known; from then on
`from_charger` rewrites the provisional id to the real one in what the charger sends (replayed
and live) and `from_upstream` rewrites the real id back in the back-office's CALLs
(RemoteStopTransaction, SetChargingProfile), until the transaction's StopTransaction has passed.
These rewrites are the only changes the proxy makes to content. OCPP 2.x needs none: there the
station chooses the transactionId.

Duplicates: a 1.6 StartTransaction is identified by its content (connectorId, idTag, meterStart,
timestamp, reservationId). A charger re-sending one that is already in the outbox gets the same
provisional id and adds nothing; one the back-office has answered before (seen live, or
replayed) gets the real id and is never sent upstream again.

Bounds: an entry that would take the charger's outbox past its bounds, or all outboxes past the
shared `Budget`, is refused (`Full`): the shell then closes the charger (1001) so that the
charger's own offline queue takes over. Nothing already in the outbox is ever dropped.

Replay errors (OCPP 1.6 §3.7.1, the charger's own rule): a CALLERROR is retried after
`retry_interval × attempt` seconds up to `retry_attempts` times; then the entry is parked as a
dead letter with the reason, and replay goes on with the next one.

At most once where the back-office cannot deduplicate (OCPP 1.6 StartTransaction: a second copy
starts a second transaction; 2.x TransactionEvents carry the station's transactionId and seqNo
and are simply sent again). Before a replayed 1.6 StartTransaction goes out its entry is marked
`sent` (`Send.mark_sent`: the shell stores the mark first); its answer is stored together with the
entry's removal (`Completed`); a CALLERROR clears the mark (the back-office refused it). An entry
found marked (after a crash, or a connection lost while it was in flight) is in doubt and never
sent again by itself: it is parked (`IN_DOUBT`), and so is every later message of its transaction
(`WAITS_FOR_START`), until an operator decides (`ere-proxy outbox requeue` puts them all back).
What the back-office has seen, by where the process stopped:
- before the mark was stored: nothing; after a restart the start is sent, once;
- after the mark, before or while sending, or before the answer came: nothing, or the start
  once; the start is parked: never twice (twice only if an operator requeues it);
- after the answer came, before it was stored: the start once; the start is parked;
- after it was stored: the start once; the later messages carry its real transactionId.

Authorisation: `Authorize` (and the idTagInfo of StartTransaction/StopTransaction) is answered
from the answers the back-office gave this charger earlier (`LiveObserver` learns them while the
link forwards); an unknown or expired idTag gets `unknown_id_tag` (`Invalid` by default, as
OCPP's own AllowOfflineTxForUnknownId=false).

Proof: every entry records how the link that queued it proved the charger's identity (`proof`,
one of `PROOFS`); `next_replay` parks an entry without one as a dead letter instead of sending it
in the charger's name.

The records and decisions are in `proxy.outbox.entries`; what live links teach the outbox
(authorisations, real transaction ids) in `proxy.outbox.learned`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import orjson

from proxy.outbox.entries import (
    Budget,
    Completed,
    DeadLetter,
    Entry,
    Full,
    OfflineAnswer,
    ReplayOutcome,
    ReplayStep,
    Retry,
    Send,
    Transaction,
)
from proxy.outbox.frames import call_frame, loads_or_none, payload_of
from proxy.outbox.learned import AuthorizationCache, is_ocpp16, start_key
from proxy.runtime.config import OutboxSettings
from proxy.wire.codec import CALL, CALLERROR, Message

# Actions whose offline answer is an empty object (notifications of OCPP 1.6 and 2.x; the last
# seven are new in 2.1, whose answers to them have no required field either).
_EMPTY_ANSWER: Final = frozenset(
    {
        "StatusNotification",
        "MeterValues",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "SecurityEventNotification",
        "SignedFirmwareStatusNotification",
        "LogStatusNotification",
        "NotifyEvent",
        "NotifyReport",
        "NotifyMonitoringReport",
        "NotifyChargingLimit",
        "ReportChargingProfiles",
        "ClearedChargingLimit",
        "PublishFirmwareStatusNotification",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "ReservationStatusUpdate",
        "NotifySettlement",
        "NotifyPriorityCharging",
        "NotifyDERAlarm",
        "NotifyDERStartStop",
        "ReportDERControl",
        "BatterySwap",
        "ClosePeriodicEventStream",
    }
)
# Actions answered offline with something of ours (the rest get a CALLERROR and are not queued:
# their answers carry decisions only the back-office can make, e.g. SignCertificate).
_ANSWERED: Final = _EMPTY_ANSWER | {
    "BootNotification",
    "Heartbeat",
    "Authorize",
    "StartTransaction",
    "StopTransaction",
    "TransactionEvent",
}
# Transaction messages a charger re-sends when it missed our answer (compared byte for byte).
_RESENT: Final = frozenset({"MeterValues", "StopTransaction", "TransactionEvent"})
_RESENT_WINDOW: Final = 8
OFFLINE_ERROR: Final = "back-office unreachable"
# How a link proved the charger's identity: the back-office accepted the connection, a managed
# route's password, the header the back-office last accepted (a verifier), a client certificate
# bound to the identity (security profile 3), or an operator's requeue. Only entries with one of these are ever replayed; anything else is parked.
PROOFS: Final = frozenset({"upstream", "password", "verifier", "certificate", "operator"})
UNPROVEN: Final = "queued without proof of the charger's identity"
IN_DOUBT: Final = "in doubt: sent upstream, but its answer was never recorded (the back-office may have started it)"
WAITS_FOR_START: Final = "waits for its StartTransaction, which is in doubt"
REPLAY_ID_PREFIX: Final = "outbox-"


def _utc(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _result(unique_id: str, payload: Any) -> bytes:
    return b"[3," + orjson.dumps(unique_id) + b"," + orjson.dumps(payload) + b"]"


def _error(unique_id: str) -> bytes:
    return (
        b"[4," + orjson.dumps(unique_id) + b',"InternalError","' + OFFLINE_ERROR.encode() + b'",{}]'
    )


@dataclass
class ChargerOutbox:
    """The outbox of one charger: queued entries, transaction ids, and the replay in progress.

    Built from what the store holds (`entries` in order, `transactions`, `next_seq`). Counters for
    metrics: `rewrites`, `duplicates`.
    """

    identity: str
    version: str
    settings: OutboxSettings
    budget: Budget
    entries: deque[Entry] = field(default_factory=deque)
    transactions: dict[int, Transaction] = field(default_factory=dict)
    next_seq: int = 1
    auth: AuthorizationCache = field(default_factory=AuthorizationCache)
    starts: dict[str, int] = field(default_factory=dict)  # StartTransaction content → real id
    rewrites: int = 0
    duplicates: int = 0
    in_flight: Entry | None = None
    in_flight_id: str | None = None
    retry_at: float | None = None
    proof: str = "unknown"  # how this link proved the charger's identity: given to new entries

    def __post_init__(self) -> None:
        self.ocpp16 = is_ocpp16(self.version)
        self.bytes = sum(len(e.payload) for e in self.entries)
        self._by_key = {t.key: t for t in self.transactions.values()}
        self._open_real = {
            t.real: t for t in self.transactions.values() if t.real is not None and not t.ended
        }

    @property
    def empty(self) -> bool:
        return not self.entries

    @property
    def at_bound(self) -> bool:
        """True when not even a small entry would fit (the charger should keep its own queue)."""
        settings = self.settings
        return (
            len(self.entries) >= settings.max_entries_per_charger
            or self.bytes >= settings.max_bytes_per_charger
            or not self.budget.fits(1)
        )

    @property
    def needs_rewriting(self) -> bool:
        """True while a transaction started offline is open (live frames need their ids mapped)."""
        return any(not t.ended for t in self.transactions.values())

    # -- offline ---------------------------------------------------------------------------
    def offline_call(
        self, unique_id: str, action: str, payload: bytes, now: float
    ) -> OfflineAnswer | Full:
        """Answer a charger CALL ourselves; the entry (if any) must be stored before the answer goes out."""
        if action not in _ANSWERED:
            return OfflineAnswer(_error(unique_id))
        request = loads_or_none(payload)
        body = request if isinstance(request, dict) else {}
        transaction = None
        if action == "StartTransaction" and self.ocpp16:
            key = start_key(request)
            known = self._by_key.get(key) if key is not None else None
            # a re-sent StartTransaction we answered before: the same id again
            if known is not None:
                self.duplicates += 1
                return OfflineAnswer(
                    _result(unique_id, self._start_answer(body, known.provisional, now))
                )
            if key is not None and key in self.starts:  # the back-office already has this one
                self.duplicates += 1
                return OfflineAnswer(
                    _result(unique_id, self._start_answer(body, self.starts[key], now))
                )
            if key is not None:
                transaction = Transaction(self.settings.provisional_id_base + self.next_seq, key)
        elif action in _RESENT and any(
            e.action == action and e.payload == payload for e in _last(self.entries)
        ):
            self.duplicates += 1  # a re-sent transaction message whose first copy is queued
            return OfflineAnswer(_result(unique_id, self._answer(action, body, None, now)))
        if len(self.entries) + 1 > self.settings.max_entries_per_charger:
            return Full("charger outbox holds its maximum number of entries")
        if self.bytes + len(payload) > self.settings.max_bytes_per_charger:
            return Full("charger outbox holds its maximum number of bytes")
        if not self.budget.fits(len(payload)):
            return Full("the outboxes of all chargers are full")
        entry = Entry(self.next_seq, action, payload, now, proof=self.proof)
        self.next_seq += 1
        self.entries.append(entry)
        self.bytes += len(payload)
        self.budget.add(len(payload))
        if transaction is not None:
            self.transactions[transaction.provisional] = transaction
            self._by_key[transaction.key] = transaction
        return OfflineAnswer(
            _result(unique_id, self._answer(action, body, transaction, now)), entry, transaction
        )

    def _answer(
        self, action: str, request: dict[str, Any], transaction: Transaction | None, now: float
    ) -> Any:
        if action in _EMPTY_ANSWER:
            return {}
        if action == "BootNotification":
            return {
                "status": "Accepted",
                "currentTime": _utc(now),
                "interval": self.settings.heartbeat_interval,
            }
        if action == "Heartbeat":
            return {"currentTime": _utc(now)}
        if action == "StartTransaction":
            provisional = (
                transaction.provisional
                if transaction is not None
                else self.settings.provisional_id_base
            )
            return self._start_answer(request, provisional, now)
        if self.ocpp16:  # Authorize, StopTransaction
            id_tag = request.get("idTag")
            if not isinstance(id_tag, str):
                return {} if action == "StopTransaction" else {"idTagInfo": {"status": "Invalid"}}
            return {"idTagInfo": self.auth.info(id_tag, now, self.settings.unknown_id_tag)}
        token = request.get("idToken")  # 2.x Authorize, TransactionEvent
        id_token = token.get("idToken") if isinstance(token, dict) else None
        if not isinstance(id_token, str):
            return {} if action == "TransactionEvent" else {"idTokenInfo": {"status": "Invalid"}}
        return {"idTokenInfo": self.auth.info(id_token, now, self.settings.unknown_id_tag)}

    def _start_answer(
        self, request: dict[str, Any], transaction_id: int, now: float
    ) -> dict[str, Any]:
        id_tag = request.get("idTag")
        info = (
            self.auth.info(id_tag, now, self.settings.unknown_id_tag)
            if isinstance(id_tag, str)
            else {"status": "Invalid"}
        )
        return {"transactionId": transaction_id, "idTagInfo": info}

    # -- replay ----------------------------------------------------------------------------
    def next_replay(self, now: float) -> ReplayStep | None:
        """The next step of the replay, or None (empty, waiting for an answer, or for `retry_at`).

        An entry queued without proof of the charger's identity (`PROOFS`) is parked at once.
        """
        if self.in_flight is not None or not self.entries:
            return None
        if self.retry_at is not None and now < self.retry_at:
            return None
        self.retry_at = None
        entry = self.entries[0]
        if entry.proof not in PROOFS:  # never replayed in the charger's name without proof
            return self._park(UNPROVEN)
        start = entry.action == "StartTransaction" and self.ocpp16
        if start:
            transaction = self._by_key.get(start_key(loads_or_none(entry.payload)) or "")
            if transaction is not None and transaction.key in self.starts:
                # the back-office answered this start before: never start it twice
                self.duplicates += 1
                return Completed(
                    self._pop(), self._learn(transaction, self.starts[transaction.key])
                )
            if entry.sent:  # it may have started upstream already: never sent a second time
                if transaction is not None:
                    transaction.in_doubt = True
                return self._park(IN_DOUBT, transaction)
        elif self._waits_for_start(entry):
            return self._park(WAITS_FOR_START)
        self.in_flight = entry
        self.in_flight_id = f"{REPLAY_ID_PREFIX}{entry.seq}-{entry.attempts}"
        payload = self._rewritten(entry.action, entry.payload)
        if payload is not entry.payload:
            self.rewrites += 1
        return Send(entry, call_frame(self.in_flight_id, entry.action, payload), mark_sent=start)

    def _park(self, reason: str, transaction: Transaction | None = None) -> DeadLetter:
        """The first entry as a dead letter; a parked StopTransaction still ends its transaction."""
        entry = self._pop()
        if entry.action == "StopTransaction" and self.ocpp16:
            transaction = self._ended(entry.payload) or transaction
        return DeadLetter(entry, reason, transaction)

    def _waits_for_start(self, entry: Entry) -> bool:
        """A 1.6 transaction message of a transaction whose StartTransaction is parked in doubt."""
        if not self.ocpp16 or entry.action not in ("MeterValues", "StopTransaction"):
            return False
        request = loads_or_none(entry.payload)
        tid = request.get("transactionId") if isinstance(request, dict) else None
        transaction = self.transactions.get(tid) if _is_id(tid) else None
        return transaction is not None and transaction.in_doubt

    def replay_answer(self, message: Message, now: float) -> ReplayOutcome | None:
        """Handle the back-office's answer to the replayed CALL (None: not an answer to it)."""
        entry = self.in_flight
        if entry is None or message.unique_id != self.in_flight_id:
            return None
        self.in_flight = self.in_flight_id = None
        if message.message_type == CALLERROR:
            entry.attempts += 1
            if entry.attempts >= self.settings.retry_attempts:
                self._pop()
                reason = f"CALLERROR {message.error_code}: {_error_description(message)}"
                ended = (
                    self._ended(entry.payload)
                    if entry.action == "StopTransaction" and self.ocpp16
                    else None
                )
                return DeadLetter(entry, reason[:500], ended)
            self.retry_at = now + self.settings.retry_interval * entry.attempts
            return Retry(entry, self.retry_at)
        self._pop()
        transaction = None
        if entry.action == "StartTransaction" and self.ocpp16:
            answer = loads_or_none(payload_of(message))
            real = answer.get("transactionId") if isinstance(answer, dict) else None
            known = self._by_key.get(start_key(loads_or_none(entry.payload)) or "")
            if known is not None and isinstance(real, int):
                self.starts[known.key] = real
                transaction = self._learn(known, real)
        elif entry.action == "StopTransaction" and self.ocpp16:
            transaction = self._ended(entry.payload)
        return Completed(entry, transaction)

    def connection_lost(self) -> None:
        """The upstream went away: an unanswered replayed CALL goes out again (same attempt),
        except a 1.6 StartTransaction, which may have started upstream: it is parked in doubt."""
        if (
            self.in_flight is not None
            and self.in_flight.action == "StartTransaction"
            and self.ocpp16
        ):
            self.in_flight.sent = True
        self.in_flight = self.in_flight_id = None

    def _pop(self) -> Entry:
        entry = self.entries.popleft()
        self.bytes -= len(entry.payload)
        self.budget.remove(len(entry.payload))
        return entry

    def _learn(self, transaction: Transaction, real: int) -> Transaction:
        transaction.real = real
        if not transaction.ended:
            self._open_real[real] = transaction
        return transaction

    def _ended(self, payload: bytes) -> Transaction | None:
        """Mark the transaction of a StopTransaction (charger-side id) ended; it is returned to store."""
        request = loads_or_none(payload)
        tid = request.get("transactionId") if isinstance(request, dict) else None
        transaction = self.transactions.get(tid) if _is_id(tid) else None
        if transaction is None or transaction.ended:
            return None
        transaction.ended = True
        if transaction.real is not None:
            self._open_real.pop(transaction.real, None)
        return transaction

    # -- live rewriting ----------------------------------------------------------------------
    def from_charger(self, message: Message) -> tuple[bytes | None, Transaction | None]:
        """A live charger CALL: its payload with provisional ids replaced (None: unchanged), and
        the transaction its StopTransaction ended (to store)."""
        if not self.ocpp16 or message.message_type != CALL or not self.transactions:
            return None, None
        payload = payload_of(message)
        rewritten = self._rewritten(message.action or "", payload)
        ended = self._ended(payload) if message.action == "StopTransaction" else None
        if rewritten is payload:
            return None, ended
        self.rewrites += 1
        return rewritten, ended

    def upstream_view(self, message: Message) -> bytes | None:
        """The payload the back-office sees (or will see) for a charger CALL; None: unchanged."""
        if not self.ocpp16 or message.message_type != CALL or not self.transactions:
            return None
        payload = payload_of(message)
        rewritten = self._rewritten(message.action or "", payload)
        return None if rewritten is payload else rewritten

    def from_upstream(self, message: Message) -> bytes | None:
        """A back-office CALL with real ids of offline transactions replaced by the provisional ones."""
        if not self._open_real or message.message_type != CALL:
            return None
        request = loads_or_none(payload_of(message))
        if not isinstance(request, dict):
            return None
        if message.action == "RemoteStopTransaction":
            target = request
        elif message.action == "SetChargingProfile" and isinstance(
            request.get("csChargingProfiles"), dict
        ):
            target = request["csChargingProfiles"]
        else:
            return None
        transaction = (
            self._open_real.get(target["transactionId"])
            if _is_id(target.get("transactionId"))
            else None
        )
        if transaction is None:
            return None
        target["transactionId"] = transaction.provisional
        self.rewrites += 1
        return orjson.dumps(request)

    def _rewritten(self, action: str, payload: bytes) -> bytes:
        """`payload` with a provisional transactionId replaced by its real one (1.6 only)."""
        if (
            not self.ocpp16
            or action not in ("MeterValues", "StopTransaction")
            or not self.transactions
        ):
            return payload
        request = loads_or_none(payload)
        if not isinstance(request, dict):
            return payload
        tid = request.get("transactionId")
        transaction = self.transactions.get(tid) if _is_id(tid) else None
        if transaction is None or transaction.real is None:
            return payload
        request["transactionId"] = transaction.real
        return orjson.dumps(request)


def _is_id(value: Any) -> TypeGuard[int]:
    """A 1.6 transactionId we could have handed out: an integer (JSON true is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _last(entries: deque[Entry]) -> Iterable[Entry]:
    """The newest `_RESENT_WINDOW` entries (a re-sent message is one of the last few)."""
    for index in range(len(entries) - 1, max(-1, len(entries) - 1 - _RESENT_WINDOW), -1):
        yield entries[index]


def _error_description(message: Message) -> str:
    frame = loads_or_none(message.data)
    return str(frame[3]) if isinstance(frame, list) and len(frame) > 3 else ""
