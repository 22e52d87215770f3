"""One side of a connection through the proxy (the charger's, or the upstream's), and how it ends.

`Side` holds a peer's stream, the reader of what it sends and what is known of its state;
`close_side` is the one way a side is closed by the proxy: links and relays alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from proxy.forward.transport import Transport, transport_for
from proxy.runtime.metrics import DirectionMeters
from proxy.wire.codec import FrameReader, Message, ProtocolError, encode_close

STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(eq=False, slots=True)
class Side:
    """One leg of a connection through the proxy, named by the peer on it."""

    name: str  # "charger" or "upstream"
    stream: trio.abc.Stream
    reader: FrameReader  # reads what this peer sends
    meters: DirectionMeters  # counts what this peer sends
    mask: bool  # frames we write to this peer must be masked (we are its client)
    # ids of this peer's CALLs not answered yet, oldest first (an empty dict is a third of a set)
    pending: dict[str, None] = field(default_factory=dict)
    gone: bool = False  # the peer hung up or its socket failed: nothing more can be written
    broke_protocol: bool = False  # its reader failed: nothing it sends can be understood
    dirty: bool = False  # what we sent this peer ends mid-frame (or a write was interrupted)
    # read from this peer but not handled yet (behind its handshake): goes first
    trailing: bytes = b""
    # fed from the other peer but not yet written to this one (by the native engine): goes first
    unsent: bytes = b""
    # given every message this peer sends as it is read, if set (a charger's mirrors' copies)
    copies: Callable[[list[Message]], None] | None = None
    transport: Transport = field(init=False)

    def __post_init__(self) -> None:
        self.transport = transport_for(self.stream)

    @property
    def closed(self) -> bool:
        """The peer's close frame has been read."""
        return self.reader.closed


async def close_side(
    side: Side, code: tuple[int, str] | None, timeout: float, *, close_socket: bool = True
) -> None:
    """End `side`: our close frame with `code` (if given, and the side can take one: it has not
    hung up and nothing half-sent is in its way), then up to `timeout` for its answer, then the
    socket (unless `close_socket` is False: the caller closes it).

    The answer is a charger's close reply, or an upstream server's hang-up; reading on meanwhile
    also keeps unread input from turning our close into a reset that destroys it. A side that
    broke the protocol is asked to hang up (half-close) instead, its bytes unread. Never raises
    (but Cancelled).
    """
    with trio.move_on_after(timeout):
        try:
            if code is not None and not side.gone and not side.dirty:
                await side.transport.send(encode_close(code[0], code[1], mask=side.mask))
            if side.broke_protocol and isinstance(side.stream, trio.SocketStream):
                # its close reply would be unreadable: ask it to hang up
                await side.stream.send_eof()
            data, side.trailing = side.trailing, b""  # read (by the engine) but not yet fed
            while not side.gone and not (side.name == "charger" and side.reader.closed):
                if not data:
                    data = await side.transport.receive()
                    if not data:
                        break
                if not side.broke_protocol:
                    side.reader.feed(data)
                data = b""
        except (*STREAM_ERRORS, ProtocolError, trio.BusyResourceError):
            pass
    if close_socket:
        await trio.aclose_forcefully(side.stream)
