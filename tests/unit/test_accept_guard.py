"""Out of descriptors on accept: counted, logged, retried; the listener keeps accepting.

The charger listener and the admin port (scrapes, probes) both wait a shortage out, and the
partner API's loop (hypercorn's, Trio's `serve_listeners`) logs it a line now and then; those
tests run the process out of descriptors for real (a lowered RLIMIT_NOFILE).
"""

from __future__ import annotations

import errno
import logging
import socket
from functools import partial
from typing import cast

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry

from proxy.runtime.accept import ACCEPT_RETRY, AcceptGuard
from proxy.runtime.http_admin import AdminServer
from proxy.runtime.logs import quiet_accept_errors
from proxy.runtime.metrics import ACCEPT_ERRORS, ProxyMetrics
from testkit.descriptors import out_of_descriptors


class FailingListener:
    """A real listening socket whose first accepts fail as the kernel fails them."""

    def __init__(self, failures: list[int]) -> None:
        plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        sock = trio.socket.from_stdlib_socket(plain)
        self.real = trio.SocketListener(sock)
        self.socket = sock
        self.failures = failures

    async def accept(self) -> trio.SocketStream:
        if self.failures:
            raise OSError(self.failures.pop(0), "simulated")
        return await self.real.accept()

    async def aclose(self) -> None:
        await self.real.aclose()


def guarded(failures: list[int], metrics: ProxyMetrics) -> AcceptGuard:
    errors = metrics.accept_errors
    return AcceptGuard(
        cast(trio.SocketListener, FailingListener(failures)),
        what="chargers",
        logger=logging.getLogger("proxy.server"),
        count=lambda name: errors.labels(name).inc(),
    )


async def connect_and_close(port: int) -> None:
    client = await trio.open_tcp_stream("127.0.0.1", port)
    await client.aclose()


async def test_out_of_descriptors_is_counted_logged_and_outlasted(autojump_clock, caplog):
    metrics = ProxyMetrics(CollectorRegistry())
    guard = guarded([errno.EMFILE, errno.EMFILE, errno.ENFILE], metrics)
    port = guard.socket.getsockname()[1]
    with caplog.at_level(logging.ERROR, "proxy.server"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect_and_close, port)
            started = trio.current_time()
            stream = await guard.accept()
            assert trio.current_time() - started == pytest.approx(3 * ACCEPT_RETRY)
            await stream.aclose()
    await guard.aclose()

    def errors(name: str) -> float | None:
        return metrics.registry.get_sample_value("ere_proxy_accept_errors_total", {"error": name})

    assert errors("EMFILE") == 2 and errors("ENFILE") == 1
    assert "cannot accept chargers" in caplog.text


def test_every_accept_error_is_exported_at_zero_from_the_start():
    """Running out of descriptors stops the scrapes as well: a series that appeared only then would
    first be scraped at its final value, and increase() (ProxyAcceptErrors) would never see it."""
    metrics = ProxyMetrics(CollectorRegistry())
    for name in ACCEPT_ERRORS:
        assert (
            metrics.registry.get_sample_value("ere_proxy_accept_errors_total", {"error": name}) == 0
        ), name
    assert {getattr(errno, name) for name in ACCEPT_ERRORS} == {
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOBUFS,
        errno.ENOMEM,
    }


async def test_other_accept_errors_are_raised():
    guard = guarded([errno.EBADF], ProxyMetrics(CollectorRegistry()))
    with pytest.raises(OSError):
        await guard.accept()
    await guard.aclose()


async def test_out_of_descriptors_the_admin_port_waits_logging_a_line_now_and_then(
    autojump_clock, caplog, nursery
):
    """Not a traceback ten times a second (Trio's own retry) for as long as the shortage lasts;
    the scrape that waited in the backlog is answered once descriptors are back."""
    admin = AdminServer(CollectorRegistry(), lambda: True)
    [listener] = await nursery.start(admin.serve, "127.0.0.1", 0)
    client = trio.socket.socket()
    with caplog.at_level(logging.ERROR):
        with out_of_descriptors():
            await client.connect(listener.socket.getsockname())  # waits in the backlog
            await trio.sleep(60)
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await client.recv(1024)
    client.close()

    assert answer.startswith(b"HTTP/1.1 200")
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert {r.name for r in lines} == {"proxy.admin"}
    assert all(r.exc_info is None and "cannot accept admin connections" in r.message for r in lines)
    assert 3 <= len(lines) <= 3 + 60 * 0.1 + 1  # the first few, then one every 10 s


async def test_out_of_descriptors_the_partner_apis_loop_logs_a_line_now_and_then(
    autojump_clock, caplog, nursery
):
    """hypercorn accepts with Trio's `serve_listeners`, which logs a traceback per failed accept;
    with the roles' logging set up, a few lines get through, without tracebacks."""

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    quiet_accept_errors()  # as setup_logging does in every role
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    [bound] = await nursery.start(partial(serve, app, config))
    port = int(bound.rsplit(":", 1)[1])
    client = trio.socket.socket()
    with caplog.at_level(logging.ERROR):
        with out_of_descriptors():
            await client.connect(("127.0.0.1", port))  # waits in the backlog
            await trio.sleep(60)
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await client.recv(1024)
    client.close()

    assert answer.startswith(b"HTTP/1.1 204")
    lines = [r for r in caplog.records if r.name == "trio.serve_listeners"]
    assert 1 <= len(lines) <= 3 + 1  # the first few (the budget runs on the real clock)
    assert all(r.exc_info is None for r in lines)
