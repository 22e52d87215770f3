"""A charger speaking raw bytes: its own upgrade request, then hand-made frames.

Frames are written and read with the pure-Python reference codec, so a test controls every bit
(masking, fragmentation, invalid UTF-8, close codes) and sees every frame the proxy sends.
"""

from __future__ import annotations

import base64
import os

import trio

from testkit.reference_codec import ReferenceFrameReader, reference_encode_frame


def frame(opcode: int, payload: bytes, **kw) -> bytes:
    """One frame as a charger sends it (masked unless `mask=False`)."""
    return reference_encode_frame(opcode, payload, mask=kw.pop("mask", True), **kw)


class RawCharger:
    """A charger speaking raw bytes: its own upgrade request, then hand-made frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = ReferenceFrameReader(from_client=False, max_message_size=1 << 24)
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int) -> RawCharger:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def upgrade(
        self, identity: str = "CP-raw", extra: str = "", protocols: str = "ocpp1.6"
    ) -> bytes:
        """Send an upgrade request; return the status line and headers of the answer."""
        key = base64.b64encode(os.urandom(16)).decode()
        proto = f"Sec-WebSocket-Protocol: {protocols}\r\n" if protocols else ""
        await self.send(
            f"GET /ocpp/{identity} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{proto}{extra}\r\n".encode()
        )
        return await self.read_head()

    async def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                break
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    async def read_all(self) -> bytes:
        """Everything until the proxy closes the connection."""
        data = self.buffer
        self.buffer = b""
        while chunk := await self.stream.receive_some(65536):
            data += chunk
        return data

    async def messages_until_close(self, reply_to_close: bool = False) -> list:
        """Frames the proxy sends until it closes the TCP connection (answering its close frame)."""
        messages = self.reader.feed(self.buffer)
        self.buffer = b""
        replied = False
        while True:
            if reply_to_close and self.reader.closed and not replied:
                replied = True
                await self.send(frame(8, messages[-1].data))
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return messages
            if not chunk:
                return messages
            messages += self.reader.feed(chunk)

    async def aclose(self) -> None:
        await self.stream.aclose()
