"""The charger listener: TCP (and TLS), certificates reloaded in place, final answers delivered.

`open_listener` binds the port (shared by several processes with SO_REUSEPORT) and wraps it in
TLS when a certificate is configured; `reload_certificates` loads a renewed certificate into the
running listener (SIGHUP). `tls_handshake` completes a charger's TLS handshake and tells a failed
one from a client that hung up without a word. `send_quietly` writes a last answer and closes so
that the peer reads it (a refusal, a close frame).

Out of descriptors (or kernel memory) on accept, `AcceptGuard` counts the error
(`ere_proxy_accept_errors_total{error}`), logs it (rate-limited) and retries after
`ACCEPT_RETRY` seconds: the connections wait in the kernel's backlog meanwhile, nothing is lost
silently and the server never stops accepting.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl

import trio

from proxy.runtime.config import CannotStart, ProxySettings
from proxy.runtime.logs import LogBudget
from proxy.runtime.metrics import ProxyMetrics

log = logging.getLogger("proxy.server")

_READ = 4096
_LINGER_BYTES = 1 << 20
ACCEPT_RETRY = 0.1  # seconds between accepts while out of descriptors
_CAPACITY_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class AcceptGuard(trio.abc.Listener[trio.SocketStream]):
    """A socket listener whose accept outlasts running out of descriptors (module docstring).

    Other errors are raised as they come; closing closes the socket listener.
    """

    def __init__(self, inner: trio.SocketListener, metrics: ProxyMetrics) -> None:
        self.inner = inner
        self._metrics = metrics
        self._log = LogBudget(per_second=0.1, burst=3)  # a line every 10 s while it lasts

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.inner.socket

    async def accept(self) -> trio.SocketStream:
        while True:
            try:
                return await self.inner.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRORS:
                    raise
                name = errno.errorcode[exc.errno]
                self._metrics.accept_errors.labels(name).inc()
                if self._log.allow(trio.current_time()):
                    log.error(
                        "cannot accept chargers: out of file descriptors or memory",
                        extra={"error": name, "suppressed": self._log.suppressed()},
                    )
                await trio.sleep(ACCEPT_RETRY)

    async def aclose(self) -> None:
        await self.inner.aclose()


def server_tls_context(settings: ProxySettings) -> ssl.SSLContext | None:
    """The TLS context of the charger listener (None without a certificate)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def reload_certificates(context: ssl.SSLContext | None, settings: ProxySettings) -> bool:
    """Load the configured certificate and key into the running listener's `context` (SIGHUP).

    Handshakes from then on present the new certificate; connections already up keep theirs.
    A file that cannot be read or does not match is logged and the running certificate kept
    (False). Turning TLS on or off needs a restart: the listener's kind cannot change.
    """
    if context is None or settings.tls_cert is None or settings.tls_key is None:
        if (context is None) != (settings.tls_cert is None):
            log.warning("turning TLS on or off takes effect at the next start")
        return False
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        log.error(
            "certificate reload failed; keeping the running certificate", extra={"error": str(exc)}
        )
        return False
    log.info("certificate reloaded", extra={"certificate": settings.tls_cert})
    return True


def open_listener(
    settings: ProxySettings,
    reuse_port: bool,
    tls: ssl.SSLContext | None = None,
    metrics: ProxyMetrics | None = None,
) -> trio.abc.Listener[trio.abc.Stream]:
    """The charger listener: TCP, wrapped in TLS when a certificate is configured.

    Several processes can share the port with `reuse_port`. `tls`: the context to serve with
    (default: a new one from the settings; pass one to keep it for `reload_certificates`).
    `metrics`: where accept errors are counted (then accepting outlasts them: `AcceptGuard`).
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(4096)
    except OSError as exc:
        sock.close()
        raise CannotStart(
            f"cannot listen for chargers on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    except BaseException:
        sock.close()
        raise
    listener: trio.abc.Listener[trio.SocketStream] = trio.SocketListener(
        trio.socket.from_stdlib_socket(sock)
    )
    if metrics is not None:
        assert isinstance(listener, trio.SocketListener)
        listener = AcceptGuard(listener, metrics)
    context = tls or server_tls_context(settings)
    if context is None:
        return listener
    return trio.SSLListener(listener, context, https_compatible=False)


class TlsFailed(Exception):
    """A charger's TLS handshake failed; the message says why (OpenSSL's reason, or the error)."""


async def tls_handshake(stream: trio.abc.Stream) -> bool:
    """Complete the TLS handshake of a charger's connection (plain TCP: nothing to do).

    False: the client hung up before sending a byte (a port check: no TLS failure). A client
    that sends something else than TLS, aborts the handshake or rejects our certificate raises
    `TlsFailed`.
    """
    if not isinstance(stream, trio.SSLStream):
        return True
    transport = stream.transport_stream
    if isinstance(transport, trio.SocketStream):
        try:
            if not await transport.socket.recv(1, socket.MSG_PEEK):
                return False
        except OSError:
            return False
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        reason = getattr(cause, "reason", None) or type(cause).__name__
        raise TlsFailed(str(reason)) from None
    return True


def listening_port(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    inner = listener.transport_listener if isinstance(listener, trio.SSLListener) else listener
    assert isinstance(inner, (trio.SocketListener, AcceptGuard))
    return inner.socket.getsockname()[1]


def peer_address(stream: trio.abc.Stream) -> str:
    """The client's IP address ("" when it cannot be told): for logs and failure budgets."""
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    try:
        if isinstance(inner, trio.SocketStream):
            return str(inner.socket.getpeername()[0])
    except OSError:
        pass
    return ""


async def send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    """Best-effort write of a final answer, then a lingering close.

    Closing a socket with unread input makes the kernel reset the connection, which can destroy
    the answer before the peer reads it; so we half-close and drain what the peer still sends
    for at most a second (and at most _LINGER_BYTES) before the caller closes the socket.
    """
    if not data:
        return
    with trio.move_on_after(1):
        try:
            await stream.send_all(data)
            if isinstance(stream, trio.SocketStream):
                await stream.send_eof()
            drained = 0
            while drained < _LINGER_BYTES and (chunk := await stream.receive_some(_READ)):
                drained += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
