"""The decisions of forwarding, pure: how a link ends, what is an outage, when a relay hands back.

No I/O and no clock: the link, the relay and the admission ask these and act on the answer.
"""

from __future__ import annotations

import enum
from typing import Protocol

from proxy.wire.ocpp import CloseCode


class LinkEnd(enum.Enum):
    """How a connection ended (the `reason` label of `ere_proxy_link_ends_total`)."""

    CLOSED = "closed"  # a close frame passed and its side hung up
    CHARGER_EOF = "charger_eof"
    UPSTREAM_EOF = "upstream_eof"
    CHARGER_ERROR = "charger_error"
    UPSTREAM_ERROR = "upstream_error"
    CHARGER_PROTOCOL_ERROR = "charger_protocol_error"
    UPSTREAM_PROTOCOL_ERROR = "upstream_protocol_error"
    IDLE = "idle"
    CLOSE_TIMEOUT = "close_timeout"
    REPLACED = "replaced"
    SHUTDOWN = "shutdown"
    INTERNAL_ERROR = "internal_error"
    # With an outbox (see relay.py):
    UPSTREAM_LOST = "upstream_lost"  # the charger stays connected and is served offline
    HANDBACK = "handback"  # the relay is done: back to byte forwarding
    OUTBOX_FULL = "outbox_full"
    STORE_UNAVAILABLE = "store_unavailable"
    # a redial was refused (401/403/404): the charger is closed
    UPSTREAM_REFUSED = "upstream_refused"


# Ends we decide (stop): both peers get 1001 with this reason.
STOP_REASONS = {
    LinkEnd.REPLACED: "replaced by a new connection",
    LinkEnd.IDLE: "idle timeout",
    LinkEnd.SHUTDOWN: "going away",
}

# An upstream closing with one of these (or a 4xxx code) ended the charger's link on purpose;
# any other loss of the upstream is an outage, which an outbox rides out.
DELIBERATE_CLOSE_CODES = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_PAYLOAD,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.MANDATORY_EXTENSION,
    }
)

# Dial outcomes that mean an outage: nothing answered (no connection, or no answer in time). Any
# HTTP answer other than 101 is the back-office's verdict, never an outage.
OUTAGE_OUTCOMES = frozenset({"upstream_unreachable", "upstream_timeout"})


def is_outage(close_code: int | None) -> bool:
    """Whether an upstream that closed with `close_code` (None: without one) is an outage."""
    return close_code not in DELIBERATE_CLOSE_CODES and (close_code or 0) < 4000


def is_outage_outcome(outcome: str) -> bool:
    """Whether a dial that failed with `outcome` is an outage (else a verdict, or our own limit)."""
    return outcome in OUTAGE_OUTCOMES


class SideState(Protocol):
    """What the policy reads of a side of a connection (`side.Side`)."""

    gone: bool
    dirty: bool
    broke_protocol: bool

    @property
    def closed(self) -> bool: ...


def charger_can_stay(charger: SideState, draining: bool) -> bool:
    """Whether a charger whose upstream is lost can be kept, served by a relay: its connection is
    whole (not gone, nothing half-sent to it, it broke nothing, it has not closed) and the proxy
    is not shutting down."""
    return not (
        charger.gone or charger.dirty or charger.broke_protocol or charger.closed or draining
    )


def can_hand_back(
    *,
    upstream_connected: bool,
    outbox_settled: bool,
    call_open: bool,
    handling: bool,
    needs_rewriting: bool,
    between_messages: bool,
) -> bool:
    """Whether a relay may give its connection back to byte forwarding: an upstream is there, the
    outbox is replayed (`outbox_settled`: empty, nothing in flight), no relayed CALL waits for its
    answer, neither side is being handled, no id needs rewriting, and both readers are between
    messages (the link that takes over starts at a message boundary on both sides)."""
    return (
        upstream_connected
        and outbox_settled
        and not call_open
        and not handling
        and not needs_rewriting
        and between_messages
    )
