"""The charger listener: TCP (and TLS), certificates reloaded in place, final answers delivered.

`open_listener` binds the port (shared by several processes with SO_REUSEPORT) and wraps it in
TLS when a certificate is configured; with `tls_client_ca` the listener asks chargers for a client
certificate and verifies one that is presented (chain, validity, `tls_crl`), while chargers
without one still get in (security profiles 1 and 2; what profile 3 demands is decided at
admission). `reload_certificates` builds a new TLS context from the files (listener certificate,
client CA, CRL) and the running listener uses it for every handshake from then on (SIGHUP).
`tls_handshake` completes a charger's TLS handshake and tells a failed one from a client that hung
up without a word; `client_certificate` is what the charger's verified certificate says.
`send_quietly` writes a last answer and closes so that the peer reads it (a refusal, a close
frame).

Out of descriptors (or kernel memory) on accept, the listener counts the error
(`ere_proxy_accept_errors_total{error}`), logs it (rate-limited) and retries
(`proxy.runtime.accept.AcceptGuard`): the server never stops accepting.
"""

from __future__ import annotations

import logging
import socket
import ssl

import trio

from proxy.routing.client_cert import ClientCertificate, from_peercert
from proxy.runtime.accept import AcceptGuard
from proxy.runtime.config import CannotStart, ProxySettings
from proxy.runtime.metrics import ProxyMetrics

log = logging.getLogger("proxy.server")

_READ = 4096
_LINGER_BYTES = 1 << 20


def build_server_context(settings: ProxySettings) -> ssl.SSLContext:
    """A TLS context from the listener's files: certificate and key, and the client CA and CRL.

    Only the configured client CA bundle is trusted for client certificates (never the system's
    CAs). Raises OSError or ssl.SSLError when a file cannot be read or the key does not match.
    """
    assert settings.tls_cert is not None and settings.tls_key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=settings.tls_client_ca)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL  # profile 3 is required per charger, at admission
        if settings.tls_crl is not None:
            context.load_verify_locations(cafile=settings.tls_crl)
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


class ServerTls:
    """The listener's current TLS context; `reload_certificates` replaces it as a whole.

    A new context rather than files loaded into the old one: a CA removed from the bundle is then
    no longer trusted.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context


def server_tls_context(settings: ProxySettings) -> ServerTls | None:
    """The TLS of the charger listener (None without a certificate)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return ServerTls(build_server_context(settings))


def reload_certificates(tls: ServerTls | None, settings: ProxySettings) -> bool:
    """Serve new handshakes with a context built from the configured files again (SIGHUP).

    Handshakes from then on present the new certificate and trust the new client CA and CRL;
    connections already up keep theirs. A file that cannot be read or does not match is logged
    and the running context kept (False). Turning TLS on or off needs a restart: the listener's
    kind cannot change.
    """
    if tls is None or settings.tls_cert is None or settings.tls_key is None:
        if (tls is None) != (settings.tls_cert is None):
            log.warning("turning TLS on or off takes effect at the next start")
        return False
    try:
        tls.context = build_server_context(settings)
    except (OSError, ssl.SSLError) as exc:
        log.error(
            "certificate reload failed; keeping the running certificates",
            extra={"error": str(exc)},
        )
        return False
    log.info(
        "certificates reloaded",
        extra={"certificate": settings.tls_cert, "client_ca": settings.tls_client_ca},
    )
    return True


class TlsListener(trio.abc.Listener[trio.abc.Stream]):
    """Wraps every accepted connection in TLS with the context `tls` holds at that moment.

    The handshake is left to the handler (`tls_handshake`). Closing closes the transport listener.
    """

    def __init__(self, transport_listener: trio.abc.Listener[trio.SocketStream], tls: ServerTls):
        self.transport_listener = transport_listener
        self.tls = tls

    async def accept(self) -> trio.SSLStream[trio.SocketStream]:
        stream = await self.transport_listener.accept()
        return trio.SSLStream(stream, self.tls.context, server_side=True, https_compatible=False)

    async def aclose(self) -> None:
        await self.transport_listener.aclose()


def open_listener(
    settings: ProxySettings,
    reuse_port: bool,
    tls: ServerTls | None = None,
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
        errors = metrics.accept_errors
        listener = AcceptGuard(
            listener, what="chargers", logger=log, count=lambda name: errors.labels(name).inc()
        )
    tls = tls or server_tls_context(settings)
    if tls is None:
        return listener
    return TlsListener(listener, tls)


class TlsFailed(Exception):
    """A charger's TLS handshake failed; the message says why (OpenSSL's reason, or the error).

    `client_certificate`: the charger's certificate failed verification (expired, issued by
    another CA, revoked); the message then says how.
    """

    def __init__(self, reason: str, client_certificate: bool = False) -> None:
        super().__init__(reason)
        self.client_certificate = client_certificate


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
        if isinstance(cause, ssl.SSLCertVerificationError):  # a server verifies only the client
            raise TlsFailed(f"client certificate: {cause.verify_message}", True) from None
        reason = getattr(cause, "reason", None) or type(cause).__name__
        raise TlsFailed(str(reason)) from None
    return True


def client_certificate(stream: trio.abc.Stream) -> ClientCertificate | None:
    """The verified client certificate of a charger's TLS connection (None: none presented)."""
    if not isinstance(stream, trio.SSLStream):
        return None
    try:
        return from_peercert(stream.getpeercert())
    except (ValueError, ssl.SSLError, trio.BrokenResourceError):
        return None


def listening_port(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    inner = listener.transport_listener if isinstance(listener, TlsListener) else listener
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
