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
CALLRESULTERROR: Final[int]  # 5 (OCPP 2.1: an error about a CALLRESULT)
SEND: Final[int]  # 6 (OCPP 2.1: expects no answer)

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

@final
class Handback:
    """A link the engine gave back; its readers hold their state again.

    Side indices: 0 the charger, 1 the upstream.
    """

    @property
    def link(self) -> int: ...
    @property
    def why(self) -> str:
        """ "released", "message" (a close frame or protocol error, in `trailing[side]`), "eof",
        "read_failed", "write_failed" (with `errno`) or "panicked"."""
    @property
    def side(self) -> int | None: ...
    @property
    def errno(self) -> int: ...
    @property
    def trailing(self) -> tuple[bytes, bytes]:
        """Bytes read from each side, neither fed nor forwarded."""
    @property
    def unsent(self) -> tuple[bytes, bytes]:
        """Bytes fed from the other side, not yet written to this side."""
    @property
    def pending(self) -> tuple[list[str], list[str]]:
        """Ids of each side's CALLs not answered yet."""
    @property
    def last_call(self) -> bytes | None:
        """The charger's last CALL while unanswered (when kept)."""

# (bytes, [(opcode, message_type, n)], [(action, n)], per-bucket counts, seconds) of a direction
_Counts = tuple[int, list[tuple[int, int, int]], list[tuple[str, int]], list[int], float]
# reports in order ((link, side, at, messages) or a Handback), and both directions' counts
_Taken = tuple[list[tuple[int, int, float, list[Message]] | Handback], tuple[_Counts, _Counts]]

@final
class Engine:
    """A thread that forwards adopted links' bytes with an epoll loop, without the GIL.

    `bounds`: upper bounds (seconds) of the forwarding-time buckets, the last one infinite.
    `batch_window`, `counts_every`: the least seconds from one `take` to the signal of the next
    reports, and of counters alone (ValueError if negative or not finite).
    """

    def __init__(self, bounds: list[float], batch_window: float, counts_every: float) -> None: ...
    def fileno(self) -> int:
        """Readable when `take` has something, at most once per pacing (see `__init__`)."""
    def adopt(
        self,
        link: int,
        fds: tuple[int, int],
        readers: tuple[FrameReader, FrameReader],
        trailing: tuple[bytes, bytes],
        pending: tuple[list[str], list[str]],
        tracked: frozenset[str],
        keep_last_call: bool,
        copy_charger: bool = False,
    ) -> None:
        """Forward a link: its non-blocking sockets (kept open by the caller until handed back),
        readers (emptied until then), bytes already read, unanswered CALL ids, the charger CALL
        actions to report with their answers, whether to keep the charger's last CALL, and
        whether to report every CALL and SEND of the charger (without answers: mirror copies).

        Raises RuntimeError when the engine has stopped (the readers are left as they were)."""
    def release(self, link: int) -> None:
        """Ask for a link back; its `Handback` comes with a later `take`."""
    def idle_seconds(self, link: int) -> float | None:
        """Seconds since bytes last passed through an adopted link (None: not adopted)."""
    def take(self) -> _Taken:
        """The reports waiting, in order: `(link, side, at, messages)` for tracked messages a
        side sent that were forwarded, a `Handback` for a link given back; and both directions'
        counts since the last call: `(bytes, [(opcode, message_type, n)], [(action, n)],
        per-bucket counts, seconds)`."""
    def running(self) -> bool:
        """False once the engine's loop has ended (its links are, or are being, handed back)."""
    def close(self) -> _Taken:
        """Stop the thread; what it reported last comes back as from `take`, with every link
        still adopted handed back. Later calls return nothing."""
