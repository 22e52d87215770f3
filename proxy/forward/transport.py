"""Byte transports for the link pumps: a lean path for plain TCP sockets, Trio streams otherwise.

`trio.SocketStream` pays for generality on every call: a conflict detector, two checkpoints and
a speculative `recv` that usually fails with EAGAIN before it waits. On the forwarding path that
is most of the CPU spent per frame, so `SocketTransport` reads and writes the socket's
(non-blocking) file descriptor directly and waits with `wait_readable`/`wait_writable`.
TLS and any other stream go through `StreamTransport`, which just calls the stream.

Both raise `trio.BrokenResourceError` when the connection fails and `trio.ClosedResourceError`
when the socket is closed under them; cancellation leaves a `receive` clean (nothing consumed)
and a `send` possibly half done (the link then treats that side as mid-frame).
"""

from __future__ import annotations

import os
from typing import Protocol

import trio
from trio.lowlevel import checkpoint, wait_readable, wait_writable

RECEIVE_SIZE = 65536


class Transport(Protocol):
    async def receive(self) -> bytes:
        """The next bytes from the peer; b"" when it has hung up."""
        ...

    async def send(self, data: bytes) -> None:
        """Send all of `data`."""
        ...


class SocketTransport:
    """Direct non-blocking I/O on a `trio.SocketStream`'s socket (which stays owned by the stream)."""

    __slots__ = ("_fd", "_more")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._fd = stream.socket.fileno()
        self._more = True  # the last read filled the buffer: try reading before waiting

    @property
    def fileno(self) -> int:
        return self._fd

    async def receive(self) -> bytes:
        fd = self._fd
        if self._more:
            await checkpoint()  # keep the scheduler fair while a peer floods us
        else:
            await wait_readable(fd)
        while True:
            try:
                data = os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                await wait_readable(fd)
                continue
            except OSError as exc:
                raise _broken(exc) from exc
            self._more = len(data) == RECEIVE_SIZE
            return data

    async def send(self, data: bytes) -> None:
        fd = self._fd
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _broken(exc) from exc
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(data):
            await wait_writable(fd)
            try:
                sent += os.write(fd, view[sent:])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _broken(exc) from exc


def _broken(exc: OSError) -> Exception:
    if exc.errno == 9:  # EBADF: the socket was closed under us
        return trio.ClosedResourceError("socket was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class StreamTransport:
    """Any Trio stream (TLS, memory streams in tests)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def receive(self) -> bytes:
        data = await self._stream.receive_some(RECEIVE_SIZE)
        return data if type(data) is bytes else bytes(data)

    async def send(self, data: bytes) -> None:
        await self._stream.send_all(data)


class FailedReceive:
    """A transport whose reading failed elsewhere (in the native engine): `receive` raises that
    error; `send` still goes to the transport it wraps."""

    __slots__ = ("_error", "_inner")

    def __init__(self, inner: Transport, error: Exception) -> None:
        self._inner = inner
        self._error = error

    async def receive(self) -> bytes:
        await checkpoint()
        raise self._error

    async def send(self, data: bytes) -> None:
        await self._inner.send(data)


def transport_for(stream: trio.abc.Stream) -> Transport:
    if isinstance(stream, trio.SocketStream):
        return SocketTransport(stream)
    return StreamTransport(stream)
