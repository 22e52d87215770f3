"""Out of descriptors on accept: counted, logged, retried; the listener keeps accepting."""

from __future__ import annotations

import errno
import logging
import socket
from typing import cast

import pytest
import trio
from prometheus_client import CollectorRegistry

from proxy.forward.listener import ACCEPT_RETRY, AcceptGuard
from proxy.runtime.metrics import ACCEPT_ERRORS, ProxyMetrics


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
    return AcceptGuard(cast(trio.SocketListener, FailingListener(failures)), metrics)


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
