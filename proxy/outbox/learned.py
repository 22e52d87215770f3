"""What the outbox learns from a charger's live link: the back-office's authorisations and the
real ids of started 1.6 transactions, so that the charger can be answered offline as the
back-office would (sans-IO; `now` is passed in, Unix seconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.outbox.frames import loads_or_none, payload_of
from proxy.wire.codec import CALLRESULT, Message


def start_key(payload: Any) -> str | None:
    """The identity of a 1.6 StartTransaction by content, or None when it is malformed."""
    if not isinstance(payload, dict):
        return None
    fields = [
        payload.get(name)
        for name in ("connectorId", "idTag", "meterStart", "timestamp", "reservationId")
    ]
    return orjson.dumps(fields).decode()


def is_ocpp16(version: str) -> bool:
    """Whether `version` (a subprotocol) is OCPP 1.6 (anything not 2.x)."""
    return not version.startswith("ocpp2")


class AuthorizationCache:
    """idTag → the back-office's last idTagInfo (1.6) or idTokenInfo (2.x) for this charger."""

    def __init__(self, known: dict[str, dict[str, Any]] | None = None) -> None:
        self.known: dict[str, dict[str, Any]] = dict(known or {})

    def learn(self, id_tag: str, info: Any) -> bool:
        """Remember `info` if it is an object with a status; True when something changed."""
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("status"), str)
            or self.known.get(id_tag) == info
        ):
            return False
        self.known[id_tag] = info
        return True

    def info(self, id_tag: str, now: float, unknown_status: str) -> dict[str, Any]:
        """The cached info, or `unknown_status` when unknown or expired (1.6 expiryDate, 2.x
        cacheExpiryDateTime, compared as instants; an unreadable date counts as expired)."""
        known = self.known.get(id_tag)
        if known is None:
            return {"status": unknown_status}
        expiry = known.get("expiryDate", known.get("cacheExpiryDateTime"))
        if expiry is not None and not _later_than(expiry, now):
            return {"status": unknown_status}
        return known


def _later_than(timestamp: Any, now: float) -> bool:
    try:
        moment = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() > now


# The charger CALLs a `LiveObserver` learns from (with the back-office's answers).
OBSERVED_ACTIONS = frozenset(
    {"Authorize", "StartTransaction", "TransactionEvent", "StopTransaction"}
)


class LiveObserver:
    """What the outbox learns from a link that forwards: authorisations and started transactions.

    Fed the charger's CALLs and the back-office's answers; `on_answer` returns what it learned
    (`("auth", idTag, info)` or `("start", key, transactionId)`) for the shell to store. Only
    Authorize, StartTransaction and TransactionEvent CALLs are remembered, at most 32 at a time.
    """

    def __init__(self, version: str, auth: AuthorizationCache, starts: dict[str, int]) -> None:
        self.ocpp16 = is_ocpp16(version)
        self.auth = auth
        self.starts = starts  # StartTransaction content key → real transactionId
        self._calls: dict[str, tuple[str, Any]] = {}

    def on_call(self, message: Message) -> None:
        action = message.action
        if action in OBSERVED_ACTIONS:
            if len(self._calls) >= 32:
                del self._calls[next(iter(self._calls))]
            self._calls[message.unique_id or ""] = (action, loads_or_none(payload_of(message)))

    def on_answer(self, message: Message) -> list[tuple[str, str, Any]]:
        call = self._calls.pop(message.unique_id or "", None)
        if call is None or message.message_type != CALLRESULT:
            return []
        return self.learn(call[0], call[1], loads_or_none(payload_of(message)))

    def learn(self, action: str, request: Any, answer: Any) -> list[tuple[str, str, Any]]:
        if not isinstance(request, dict) or not isinstance(answer, dict):
            return []
        learned: list[tuple[str, str, Any]] = []
        if self.ocpp16:
            id_tag, info = request.get("idTag"), answer.get("idTagInfo")
        else:
            token = request.get("idToken")
            id_tag = token.get("idToken") if isinstance(token, dict) else None
            info = answer.get("idTokenInfo")
        if isinstance(id_tag, str) and self.auth.learn(id_tag, info):
            learned.append(("auth", id_tag, info))
        if action == "StartTransaction" and isinstance(answer.get("transactionId"), int):
            key = start_key(request)
            if key is not None:
                self.starts[key] = answer["transactionId"]
                learned.append(("start", key, answer["transactionId"]))
        return learned
