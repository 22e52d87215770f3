"""Webhook deliveries: the api role's task that sends due deliveries, signed, and logs each try.

A `Deliverer` claims due deliveries in a short transaction (`FOR UPDATE SKIP LOCKED`, so
several api processes share the work without sending one twice at once) and leases each by
moving its `next_attempt_at` ahead by `lease` seconds; then, holding no transaction, it POSTs
the event's body to the endpoint with `Ere-Signature` (`proxy.api.webhook_signing`, `t` the
attempt's time), `Ere-Event-Id`, `Ere-Event-Type` and `Ere-Delivery-Id`, and records the
outcome: a 2xx is 'delivered'; anything else (another status, a redirect, which is never
followed, a timeout, a refused connection or TLS error) is a failed attempt, tried again on the
back-off schedule (`proxy.api.webhook_schedule`) until it gives up ('failed'). Every attempt is
logged (`webhook_attempts`) with its status, error and the first bytes of the answer (at most
4 KiB is read). At most `concurrency` deliveries are under way per process. Each attempt
recorded is counted in `metrics` (`proxy.api.metrics`) by its outcome, if given.

Each attempt checks the stored URL again (`proxy.api.webhook_urls`) and connects to an address
it just resolved and checked, never resolving twice: the request goes to that IP with the URL's
`Host` and, for https, its name for SNI and certificate verification. Environment proxies are
ignored, and connections are not kept alive (one may not serve another host on the same IP).

Delivery is at least once: a receiver deduplicates by `Ere-Event-Id`. An attempt cut short by
shutdown (cancellation) gives its lease back, so any api process tries again at once; one
whose process died is tried again when its lease ends. An attempt that outlives its lease, or
whose endpoint was disabled meanwhile, is not recorded (the delivery moved on without it).

Errors: the task never ends on a bad endpoint or a database outage: a pass that fails is logged
and the next one runs after `poll` seconds.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import trio

from proxy.api.metrics import ApiMetrics
from proxy.api.webhook_schedule import Backoff
from proxy.api.webhook_signing import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    sign,
)
from proxy.api.webhook_urls import RefusedUrl, Unresolved, check_url, resolve
from proxy.ere.admin.validation import one_line
from proxy.routing.registry.errors import SecretKeyError
from proxy.routing.registry.sealing import KeyRing
from proxy.runtime.config import ApiSettings
from proxy.store.connection import Connection

__all__ = ["Deliverer", "Outcome", "run_deliveries"]

log = logging.getLogger("proxy.api.webhooks")

USER_AGENT = "ere-proxy-webhooks/1"
_READ_CAP = 4096
_SHOWN = 300
_RESOLVE_SECONDS = 5.0
_ADDRESSES_TRIED = 3
_GRACE_SECONDS = 5.0
_CLEANUP_SECONDS = 5.0

_CLAIM = """
WITH due AS (
    SELECT delivery_id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1
    ORDER BY next_attempt_at LIMIT $3
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d SET next_attempt_at = $2
    FROM due WHERE d.delivery_id = due.delivery_id
    RETURNING d.delivery_id, d.partner_id, d.webhook_id, d.event_id, d.attempts
)
SELECT c.delivery_id, c.webhook_id, c.event_id, c.attempts, e.type, e.body, w.url, w.secret,
       w.secret_sealed, w.sealed_with, w.disabled_at
FROM claimed c
JOIN webhook_endpoints w ON w.webhook_id = c.webhook_id AND w.partner_id = c.partner_id
JOIN webhook_events e ON e.event_id = c.event_id AND e.partner_id = c.partner_id
"""
_RECORD = """
WITH moved AS (
    UPDATE webhook_deliveries
    SET attempts = attempts + 1, state = $3, next_attempt_at = $4, delivered_at = $5
    WHERE delivery_id = $1 AND state = 'pending' AND next_attempt_at = $2
    RETURNING delivery_id, webhook_id, attempts
)
INSERT INTO webhook_attempts (delivery_id, attempt, webhook_id, attempted_at, ok, status, error,
                              response, duration_ms)
SELECT delivery_id, attempts, webhook_id, $6, $7, $8, $9, $10, $11 FROM moved
RETURNING attempt
"""
_MOVE = """
UPDATE webhook_deliveries SET state = $3, next_attempt_at = $4
WHERE delivery_id = $1 AND state = 'pending' AND next_attempt_at = $2
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased until `lease`, with what sending it needs."""

    delivery_id: str
    webhook_id: str
    event_id: str
    event_type: str
    attempts: int
    lease: datetime
    url: str
    body: bytes
    secret: str | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None
    error: str | None
    response: str | None
    duration_ms: int


def _shown(text: str | None) -> str | None:
    return None if text is None else one_line(text)[:_SHOWN]


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class Deliverer:
    """Sends due deliveries (see the module docstring); use it as an async context manager."""

    def __init__(
        self,
        db: Connection,
        *,
        keys: KeyRing | None,
        allow_private: bool = False,
        backoff: Backoff | None = None,
        timeout: float = 10.0,
        concurrency: int = 8,
        lease: float = 120.0,
        verify: ssl.SSLContext | bool = True,
        draw: Callable[[], float] = random.random,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self._db, self._keys, self._allow_private = db, keys, allow_private
        self._metrics = metrics
        self._backoff = backoff or Backoff()
        self._timeout, self._concurrency = timeout, concurrency
        self._lease = timedelta(seconds=max(lease, 4 * timeout))
        self._draw = draw
        self._client = httpx.AsyncClient(
            verify=verify,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
            headers={"user-agent": USER_AGENT},
        )

    async def __aenter__(self) -> Deliverer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_SECONDS):
            await self._client.aclose()

    def _secret(self, row: Any) -> str | None:
        if row["secret"] is not None:
            return str(row["secret"])
        if self._keys is None:
            return None
        try:
            return self._keys.open(row["webhook_id"], row["secret_sealed"], row["sealed_with"])
        except SecretKeyError:
            return None

    async def claim(self, now: datetime, limit: int) -> list[Claimed]:
        """Lease up to `limit` deliveries due at `now`."""
        lease = now + self._lease
        async with self._db.transaction() as tx:
            rows = await tx.fetch(_CLAIM, now, lease, limit)
        return [
            Claimed(
                row["delivery_id"],
                row["webhook_id"],
                row["event_id"],
                row["type"],
                row["attempts"],
                lease,
                row["url"],
                row["body"].encode(),
                self._secret(row),
                row["disabled_at"] is not None,
            )
            for row in rows
        ]

    async def attempt(self, item: Claimed, now: datetime) -> Outcome:
        """POST the delivery once, signed at `now`; how it went (never raises for the endpoint's
        doing)."""
        started = trio.current_time()

        def outcome(status: int | None, error: str | None, response: str | None = None) -> Outcome:
            elapsed = int((trio.current_time() - started) * 1000)
            shown = _shown(response) or None
            return Outcome(error is None, status, _shown(error), shown, max(elapsed, 0))

        if item.secret is None:
            return outcome(None, "the signing secret cannot be opened with the configured keys")
        try:
            url = check_url(item.url, allow_private=self._allow_private)
            with trio.fail_after(_RESOLVE_SECONDS):
                addresses = await resolve(url, allow_private=self._allow_private)
        except RefusedUrl as refused:
            return outcome(None, f"refused: {refused}")
        except (Unresolved, trio.TooSlowError):
            return outcome(None, f"{url.host} does not resolve")
        headers = {
            "host": url.netloc.decode("ascii"),
            "content-type": "application/json",
            "accept-encoding": "identity",  # the answer's first bytes are logged as they come
            SIGNATURE_HEADER: sign(item.body, item.secret, int(now.timestamp())),
            EVENT_ID_HEADER: item.event_id,
            EVENT_TYPE_HEADER: item.event_type,
            DELIVERY_ID_HEADER: item.delivery_id,
        }
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        error = "no address to connect to"
        for address in addresses[:_ADDRESSES_TRIED]:
            try:
                request = self._client.build_request(
                    "POST",
                    url.copy_with(host=address),
                    content=item.body,
                    headers=headers,
                    extensions=extensions,
                )
                with trio.fail_after(2 * self._timeout):  # up to the answer's head, however slow
                    response = await self._client.send(request, stream=True)
                answer = ""
                try:
                    with trio.move_on_after(self._timeout):  # its body is for the log only
                        answer = await _read_capped(response)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_SECONDS):
                        await response.aclose()
            except httpx.ConnectError as failure:
                tls = _tls_failure(failure)
                if tls is not None:  # the endpoint's certificate or handshake, not its address
                    return outcome(None, f"TLS: {tls}")
                error = f"cannot connect: {failure}" if str(failure) else "cannot connect"
                continue
            except (httpx.TimeoutException, trio.TooSlowError):
                return outcome(None, "timed out")
            except (httpx.HTTPError, httpx.InvalidURL, ssl.SSLError, OSError) as failure:
                return outcome(None, f"{type(failure).__name__}: {failure}")
            status = response.status_code
            ok = 200 <= status < 300
            return outcome(status, None if ok else f"HTTP {status}", answer)
        return outcome(None, error)

    async def record(self, item: Claimed, outcome: Outcome, now: datetime) -> bool:
        """Record the attempt made at `now` and move the delivery on; False if its lease was
        lost (nothing recorded)."""
        failures = item.attempts + 1
        delay = None if outcome.ok else self._backoff.delay(failures, self._draw())
        state = "delivered" if outcome.ok else "pending" if delay is not None else "failed"
        next_at = None if delay is None else now + timedelta(seconds=delay)
        async with self._db.transaction() as tx:
            recorded = await tx.fetchval(
                _RECORD,
                item.delivery_id,
                item.lease,
                state,
                next_at,
                now if outcome.ok else None,
                now,
                outcome.ok,
                outcome.status,
                outcome.error,
                outcome.response,
                outcome.duration_ms,
            )
        if recorded is not None and self._metrics is not None:
            self._metrics.delivery_recorded(state)
        if recorded is None:
            log.warning("delivery moved on while attempted", extra={"delivery": item.delivery_id})
        elif not outcome.ok:
            log.info(
                "webhook delivery failed",
                extra={"delivery": item.delivery_id, "error": outcome.error, "state": state},
            )
        return recorded is not None

    async def _move(self, item: Claimed, state: str, due: datetime | None) -> None:
        await self._db.execute(_MOVE, item.delivery_id, item.lease, state, due)

    async def deliver(self, item: Claimed, now: datetime) -> None:
        """Attempt one claimed delivery and record it; cancelled, it gives its lease back."""
        if item.disabled:  # disabled after it was queued
            await self._move(item, "cancelled", None)
            return
        try:
            outcome = await self.attempt(item, now)
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_SECONDS):
                await self._move(item, "pending", now)
            raise
        await self.record(item, outcome, now)

    async def run_once(self, now: datetime) -> int:
        """Claim what is due at `now` (up to `concurrency`) and deliver it; how many."""
        claimed = await self.claim(now, self._concurrency)
        async with trio.open_nursery() as nursery:
            for item in claimed:
                nursery.start_soon(self.deliver, item, now)
        return len(claimed)

    async def run(
        self, stop: trio.Event, *, poll: float = 2.0, clock: Callable[[], datetime] = _wall_clock
    ) -> None:
        """Deliver until `stop` is set, then give deliveries under way a short grace."""
        limiter = trio.CapacityLimiter(self._concurrency)

        async def one(item: Claimed, token: object) -> None:
            try:
                await self.deliver(item, clock())
            except Exception as error:  # one delivery's trouble never ends the task
                log.warning("webhook delivery not recorded", exc_info=error)
            finally:
                limiter.release_on_behalf_of(token)

        async with trio.open_nursery() as nursery:
            while not stop.is_set():
                claimed: list[Claimed] = []
                free = int(limiter.available_tokens)
                if free:
                    try:
                        claimed = await self.claim(clock(), free)
                    except Exception as error:  # a database outage: try again after `poll`
                        log.warning("cannot claim webhook deliveries", exc_info=error)
                for item in claimed:
                    token = object()
                    limiter.acquire_on_behalf_of_nowait(token)
                    nursery.start_soon(one, item, token)
                if not claimed:
                    with trio.move_on_after(poll):
                        await stop.wait()
            nursery.cancel_scope.deadline = trio.current_time() + _GRACE_SECONDS


def _tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS failure (certificate, handshake) that caused `error`, if one did."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def _read_capped(response: httpx.Response) -> str:
    """The first bytes of the answer's body (at most `_READ_CAP`), as text.

    Past the cap the connection is closed under the reader, so the body's next read fails and
    the stream's generators all finish (leaving one suspended would leak it)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size >= _READ_CAP:
                network = response.extensions.get("network_stream")
                if network is None:
                    break
                await network.aclose()
    except httpx.TransportError:  # cut short (by us past the cap, or by the endpoint)
        pass
    return b"".join(chunks)[:_READ_CAP].decode("utf-8", "replace")


async def run_deliveries(
    db: Connection,
    settings: ApiSettings,
    keys: KeyRing | None,
    stop: trio.Event,
    metrics: ApiMetrics | None = None,
) -> None:
    """The api role's delivery task: deliver until `stop` is set."""
    async with Deliverer(
        db, keys=keys, allow_private=settings.webhooks_allow_private, metrics=metrics
    ) as sender:
        await sender.run(stop)
