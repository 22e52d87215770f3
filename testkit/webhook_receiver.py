"""A webhook receiver for tests: a real HTTP/1.1 server on 127.0.0.1 (plain, or TLS with a given
server context) that records every request and answers as scripted.

`receiving()` yields a `Receiver` once it listens: `url(path)` is where it is reached,
`received` every request so far, `wait_for(n)` waits (on an event, never a sleep) until n have
arrived. Answers come from `script`, one per request (a status, or `HANG` to read the request and
never answer), then `200` for the rest; a 3xx answers with a `Location`, and `answer_body`
replaces the default short body.
"""

from __future__ import annotations

import functools
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import h11
import trio

__all__ = ["HANG", "Received", "Receiver", "receiving"]

HANG = -1
_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, port: int, scheme: str, script: list[int], answer_body: bytes) -> None:
        self.port, self.scheme = port, scheme
        self.received: list[Received] = []
        self.answer_body = answer_body
        self._script = deque(script)
        self._arrived = trio.Event()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def script(self, *answers: int) -> None:
        """Answer the next requests with `answers` (then 200 again)."""
        self._script.extend(answers)

    async def wait_for(self, count: int) -> list[Received]:
        while len(self.received) < count:
            await self._arrived.wait()
            self._arrived = trio.Event()
        return self.received

    def _next_answer(self) -> int:
        return self._script.popleft() if self._script else 200

    def _record(self, request: Received) -> None:
        self.received.append(request)
        self._arrived.set()

    async def handle(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            async with stream:
                request, chunks, size = None, [], 0
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        size += len(event.data)
                        if size > _MAX_BODY:
                            return
                        chunks.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
                received = Received(
                    request.method.decode(), request.target.decode(), headers, b"".join(chunks)
                )
                status = self._next_answer()
                self._record(received)
                if status == HANG:
                    await trio.sleep_forever()
                reply = [("content-length", str(len(self.answer_body))), ("connection", "close")]
                if 300 <= status < 400:
                    reply.append(("location", f"http://127.0.0.1:{self.port}/elsewhere"))
                data = conn.send(h11.Response(status_code=status, headers=reply))
                data += conn.send(h11.Data(data=self.answer_body)) + conn.send(h11.EndOfMessage())
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass


@asynccontextmanager
async def receiving(
    script: list[int] | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    answer_body: bytes = b"thanks",
) -> AsyncIterator[Receiver]:
    async with trio.open_nursery() as nursery:
        receiver: Receiver | None = None

        async def handler(stream: trio.abc.Stream) -> None:
            assert receiver is not None
            await receiver.handle(stream)

        if ssl_context is None:
            serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        else:
            serve = functools.partial(
                trio.serve_ssl_over_tcp, handler, 0, ssl_context, host="127.0.0.1"
            )
        listeners = await nursery.start(serve)
        port = (
            listeners[0].transport_listener.socket.getsockname()[1]
            if ssl_context
            else (listeners[0].socket.getsockname()[1])
        )
        receiver = Receiver(
            port, "https" if ssl_context else "http", list(script or []), answer_body
        )
        try:
            yield receiver
        finally:
            nursery.cancel_scope.cancel()
