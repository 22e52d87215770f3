"""How a charger is turned away at the handshake: the HTTP answer and the outcome it is counted as.

`Refusal` carries both (the `outcome` is the label of `ere_proxy_handshakes_total`). It is never
raised inside a nursery of the handshake: it would reach the server in an exception group and the
charger would get no answer at all.
"""

from __future__ import annotations

import math

from proxy.wire.handshake import HandshakeRefused, UpstreamRefused

# The challenge that comes with our own 401.
CHALLENGE = ((b"www-authenticate", b'Basic realm="ocpp"'),)
# Our own refusals of a request, by status.
REQUEST_OUTCOMES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "bad_request",
    426: "bad_request",
    431: "headers_too_large",
}


class Refusal(Exception):
    """Answer the charger with this HTTP refusal and count it as `outcome`."""

    def __init__(self, refusal: HandshakeRefused, outcome: str) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal
        self.outcome = outcome


def retry_after(seconds: float) -> tuple[tuple[bytes, bytes], ...]:
    """The Retry-After header for `seconds` (whole seconds, at least one)."""
    return ((b"retry-after", b"%d" % max(1, math.ceil(seconds))),)


def refused(
    status: int, reason: str, outcome: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Refusal:
    return Refusal(HandshakeRefused(status, reason, headers), outcome)


def verdict(answer: UpstreamRefused) -> Refusal:
    """The back-office's HTTP answer (other than 101), passed back to the charger.

    4xx and 5xx go back as they came, with the headers that tell the charger what to do
    (WWW-Authenticate, Retry-After); anything else (a redirect, a 200) is no WebSocket answer: 502.
    """
    headers = tuple(
        (name, value)
        for name, value in (
            (b"www-authenticate", answer.www_authenticate),
            (b"retry-after", answer.retry_after),
        )
        if value
    )
    if 400 <= answer.status < 500:
        return refused(answer.status, "refused by upstream", "upstream_refused", headers)
    if 500 <= answer.status < 600:
        return refused(answer.status, "upstream failed", "upstream_error", headers)
    return refused(502, f"upstream answered {answer.status}", "upstream_error")
