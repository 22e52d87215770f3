"""The admin HTTP endpoint: `/metrics` (Prometheus), `/healthz` (alive), `/readyz` (accepting).

A tiny h11 server on its own port, apart from the charger port so scrapes and probes never
compete with chargers for the listener and are never exposed on the public address by accident.
Each request is answered and the connection closed; bad requests get 400, others 404/405.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus

import h11
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from proxy.runtime.accept import AcceptGuard
from proxy.runtime.config import CannotStart

_MAX_REQUEST = 8192
log = logging.getLogger("proxy.admin")


class AdminServer:
    def __init__(self, registry: CollectorRegistry, is_ready: Callable[[], bool]) -> None:
        self._registry = registry
        self._is_ready = is_ready

    def answer(self, method: bytes, target: bytes) -> tuple[int, bytes, bytes]:
        """(status, content type, body) for a request; sans-IO."""
        path = target.split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, b"text/plain", b"method not allowed\n"
        if path == b"/metrics":
            return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(self._registry)
        if path == b"/healthz":
            return 200, b"text/plain", b"ok\n"
        if path == b"/readyz":
            if self._is_ready():
                return 200, b"text/plain", b"ready\n"
            return 503, b"text/plain", b"not ready\n"
        return 404, b"text/plain", b"not found\n"

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Answer one request; any failure only ends this connection, never the process."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)
        try:
            with trio.move_on_after(10):
                try:
                    event = conn.next_event()
                    while event is h11.NEED_DATA:
                        conn.receive_data(bytes(await stream.receive_some(_MAX_REQUEST)))
                        event = conn.next_event()
                except h11.RemoteProtocolError:
                    event = None
                if isinstance(event, h11.Request):
                    status, content_type, body = self.answer(event.method, event.target)
                    if event.method == b"HEAD":
                        body = b""
                elif conn.our_state is h11.IDLE and conn.their_state is not h11.CLOSED:
                    status, content_type, body = 400, b"text/plain", b"bad request\n"
                else:
                    return  # the client hung up (a TCP health check): nothing to answer
                await self._respond(stream, conn, status, content_type, body)
        except (
            h11.LocalProtocolError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
        ):
            pass
        except Exception:
            log.exception("admin request failed")
        finally:
            await trio.aclose_forcefully(stream)

    @staticmethod
    async def _respond(
        stream: trio.abc.Stream, conn: h11.Connection, status: int, content_type: bytes, body: bytes
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        phrase = HTTPStatus(status).phrase.encode()
        out = conn.send(h11.Response(status_code=status, headers=headers, reason=phrase)) or b""
        out += (conn.send(h11.Data(data=body)) or b"") if body else b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out)

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started` gets the bound listeners.

        A port that cannot be bound raises `CannotStart`. Out of descriptors, accepting waits
        and retries, logged without a traceback (`proxy.runtime.accept`).
        """
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise CannotStart(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from None
        guarded = [
            AcceptGuard(listener, what="admin connections", logger=log) for listener in listeners
        ]
        await trio.serve_listeners(self.handle, guarded, task_status=task_status)


def metrics_url(host: str, listeners: list[AcceptGuard]) -> str:
    """The /metrics URL of an admin endpoint that `serve` started (port 0 picks a free port)."""
    port = listeners[0].socket.getsockname()[1]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
