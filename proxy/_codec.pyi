"""Native RFC 6455 frame reader/writer and OCPP-J envelope peek (Rust, `codec_rs`).

The reader is fed exactly the bytes a socket returned and reports complete messages; it never
modifies or re-frames them. See `proxy/codec.py` for the pure-Python reference implementation
that must behave identically.
"""

from typing import Final, final

# WebSocket opcodes of complete messages (continuation frames are joined into their message).
TEXT: Final[int]  # 1
BINARY: Final[int]  # 2
CLOSE: Final[int]  # 8
PING: Final[int]  # 9
PONG: Final[int]  # 10

# OCPP-J message types; NOT_OCPP for binary/control messages and text that is no OCPP-J frame.
NOT_OCPP: Final[int]  # 0
CALL: Final[int]  # 2
CALLRESULT: Final[int]  # 3
CALLERROR: Final[int]  # 4

# False in a debug build of the extension (`maturin develop` without --release).
OPTIMIZED: Final[bool]

class ProtocolError(Exception):
    """The peer broke RFC 6455; close its connection with `close_code` (1002, 1007 or 1009)."""

    close_code: int
    reason: str
    def __init__(self, close_code: int, reason: str) -> None: ...

@final
class Message:
    """One complete WebSocket message (data messages with their fragments joined)."""

    opcode: int
    data: bytes
    message_type: int
    unique_id: str | None
    action: str | None
    error_code: str | None
    payload_start: int
    payload_end: int
    close_code: int | None
    close_reason: str | None

@final
class FrameReader:
    """Incremental reader for one direction of one connection.

    `from_client=True` reads what a client sends (every frame must be masked);
    `from_client=False` reads what a server sends (no frame may be masked).
    """

    def __init__(self, *, from_client: bool, max_message_size: int = 1048576) -> None: ...
    def feed(self, data: bytes) -> list[Message]:
        """Consume `data` (split anywhere); return the messages it completed, in order.

        Raises ProtocolError on the first violation; the reader then stays failed and raises the
        same error on every later call.
        """
    @property
    def at_frame_boundary(self) -> bool:
        """True when everything fed so far forms whole frames (nothing half-read)."""
    @property
    def at_message_boundary(self) -> bool:
        """True at a frame boundary with no fragmented message open (whole messages only)."""
    @property
    def closed(self) -> bool:
        """True once a close frame has been read."""

def encode_frame(opcode: int, payload: bytes, *, mask: bool, fin: bool = True) -> bytes:
    """One frame; `mask=True` (client side) masks with a key from OS randomness."""

def encode_close(code: int | None = None, reason: str = "", *, mask: bool) -> bytes:
    """A close frame; `code=None` gives an empty close payload (then `reason` must be empty)."""

def text_message(text: bytes) -> Message:
    """A TEXT `Message` of `text` as a reader would report it: its OCPP-J envelope peeked (text
    that is not UTF-8 or not OCPP-J gives NOT_OCPP). For frames the proxy writes itself."""
