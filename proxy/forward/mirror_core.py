"""What a charger's mirrors get, and what they may send it (sans-IO: no sockets, no clock).

A mirror is a secondary back-office (`runtime.config.Mirror`). `MirrorCore` holds the decisions
for one charger connection and all its mirrors; the Trio shell (`proxy.forward.mirror`) moves the
bytes and passes `now` in:

- Copies: every CALL (and 2.1 SEND) the charger sends is queued for each mirror, its text as
  received. A full queue drops its oldest copy (`drop_oldest`) or takes no copy until there is
  room (`pause`); either way the drop is reported. The mirror's answers to copies are dropped
  (the charger already has the primary's answer) and reported.
- Blocking: a mirror's CALL whose action is not in its allow-list is answered by the proxy with a
  CALLERROR `SecurityError` (a code of OCPP 1.6, 2.0.1 and 2.1 alike) and never reaches the
  charger. A SEND of a mirror cannot be answered and is only reported.
- Serialisation: the charger never has two CALLs of the back-office side outstanding (OCPP-J). An
  allowed mirror CALL waits while a primary CALL to the charger is unanswered; a primary CALL
  waits while a mirror CALL is out (`primary_must_wait`). Each mirror has at most one CALL
  waiting or out; another is answered with `GenericError`. A mirror CALL not answered by the
  charger within the mirror's `call_timeout` (waiting included) is answered with `GenericError`.
- Ids: a mirror CALL goes to the charger under an id of ours (`prefix` + a counter; the caller
  picks a prefix no peer can guess), so it cannot collide with the primary's; the charger's
  answer goes back to the mirror that asked, with the mirror's id restored, and never to the
  primary. A late answer (after the timeout) is dropped.

`FrameSplitter` cuts the charger's byte stream into whole frames, so that the shell can leave out
the frames of an answer to a mirror and forward every other frame byte for byte (the codec reports
messages, not where their frames end).

Errors: nothing a mirror or a charger sends raises here; what cannot be understood is reported as
`invalid` and left out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import orjson

from proxy.wire.codec import CALL, CALLERROR, CALLRESULT, CALLRESULTERROR, SEND, Message

ANSWERS = (CALLRESULT, CALLERROR, CALLRESULTERROR)
BLOCKED_CODE = "SecurityError"
BUSY_CODE = "GenericError"
TIMEOUT_CODE = "GenericError"
_MAX_ID = 36  # OCPP-J unique ids are at most 36 characters
_MAX_LATE = 64  # remembered ids of timed-out mirror CALLs, whose late answers are dropped
_REPLIES = 16  # bound on the proxy's own answers waiting for one mirror


@dataclass(frozen=True)
class MirrorPolicy:
    """What one mirror may do (from `runtime.config.Mirror`)."""

    allow: frozenset[str]
    queue: int
    overflow: Literal["drop_oldest", "pause"]
    call_timeout: float


@dataclass
class MirrorQueue:
    """What waits to be sent to one mirror: the proxy's answers first, then copies in order."""

    policy: MirrorPolicy
    copies: deque[bytes] = field(default_factory=deque)
    replies: deque[bytes] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self.copies) + len(self.replies)

    def take(self, n: int) -> list[bytes]:
        """Up to `n` texts to send next, in order (empty: nothing waits)."""
        taken: list[bytes] = []
        for source in (self.replies, self.copies):
            while source and len(taken) < n:
                taken.append(source.popleft())
        return taken

    def clear(self) -> int:
        """Forget what waits (the mirror connection was lost); returns how many."""
        n = len(self)
        self.copies.clear()
        self.replies.clear()
        return n


@dataclass(frozen=True)
class MirrorCall:
    """An allowed mirror CALL, waiting for or out at the charger."""

    mirror: int
    mirror_id: str  # the id the mirror gave it
    charger_id: str  # the id the charger sees
    text: bytes  # the CALL as the charger gets it
    deadline: float


@dataclass(frozen=True)
class Outcome:
    """What the core made of a mirror's message (its answer, if any, is in the mirror's queue):
    `kind` for metrics; `reply_dropped` when that answer found the queue of answers full."""

    kind: Literal["blocked", "allowed", "busy", "answer_dropped", "invalid", "reply_dropped"]


@dataclass(frozen=True)
class FromCharger:
    """What the core made of a charger's message: forward it to the primary or not, and which
    mirrors lost a queued copy (`dropped`) for it."""

    forward: bool = True
    answered_mirror: int | None = None  # the mirror whose CALL it answered
    dropped: tuple[int, ...] = ()
    queued: tuple[int, ...] = ()


_FORWARD = FromCharger()


def call_error(unique_id: str, code: str, description: str) -> bytes:
    """An OCPP-J CALLERROR text."""
    return orjson.dumps([CALLERROR, unique_id, code, description, {}])


class MirrorCore:
    """The mirrors of one charger connection; see the module docstring.

    `prefix` starts the ids of mirror CALLs towards the charger (at most 24 characters).
    """

    def __init__(self, policies: list[MirrorPolicy], prefix: str) -> None:
        assert len(prefix) <= _MAX_ID - 12
        self.queues = [MirrorQueue(policy) for policy in policies]
        self._prefix = prefix
        self._counter = 0
        self.waiting: deque[MirrorCall] = deque()  # allowed, not yet sent to the charger
        self.out: MirrorCall | None = None  # sent to the charger, not yet answered
        self.primary_call: str | None = None  # the primary's latest CALL to the charger, unanswered
        self._late: deque[str] = deque(maxlen=_MAX_LATE)

    # -- the charger's side --------------------------------------------------------------------
    def from_charger(self, message: Message) -> FromCharger:
        """A message the charger sent: a copy for every mirror, or an answer to a mirror CALL."""
        kind = message.message_type
        if kind in (CALL, SEND):
            dropped: list[int] = []
            queued: list[int] = []
            for index, queue in enumerate(self.queues):
                if self._offer(queue, message.data):
                    queued.append(index)
                else:
                    dropped.append(index)
            return FromCharger(dropped=tuple(dropped), queued=tuple(queued))
        if kind not in ANSWERS:
            return _FORWARD
        unique_id = message.unique_id
        out = self.out
        if out is not None and unique_id == out.charger_id:
            self.out = None
            restored = _with_id(message.data, out.mirror_id)
            replied = restored is not None and self._reply(out.mirror, restored)
            return FromCharger(
                forward=False, answered_mirror=out.mirror, queued=(out.mirror,) if replied else ()
            )
        if unique_id is not None and unique_id in self._late:
            self._late.remove(unique_id)
            return FromCharger(forward=False)
        if unique_id is not None and unique_id == self.primary_call:
            self.primary_call = None
        return _FORWARD

    def _offer(self, queue: MirrorQueue, text: bytes) -> bool:
        """Queue a copy; False when the queue was full (one copy was dropped)."""
        if len(queue.copies) < queue.policy.queue:
            queue.copies.append(text)
            return True
        if queue.policy.overflow == "drop_oldest":
            queue.copies.popleft()
            queue.copies.append(text)
        return False

    def primary_must_wait(self) -> bool:
        """A primary CALL to the charger must wait: a mirror CALL is out."""
        return self.out is not None

    def primary_sent(self, message: Message) -> None:
        """A message of the primary went to the charger."""
        if message.message_type == CALL:
            unique_id = self.primary_call = message.unique_id
            if unique_id is not None and unique_id in self._late:  # the primary's id wins
                self._late.remove(unique_id)

    # -- the mirrors' side ---------------------------------------------------------------------
    def from_mirror(self, index: int, message: Message, now: float) -> Outcome:
        """A message mirror `index` sent (see the module docstring)."""
        kind = message.message_type
        if kind in ANSWERS:
            return Outcome("answer_dropped")
        if kind == SEND:
            return Outcome("blocked")
        if kind != CALL or message.unique_id is None or message.action is None:
            return Outcome("invalid")
        mirror_id, action = message.unique_id, message.action
        policy = self.queues[index].policy
        if action not in policy.allow:
            text = call_error(mirror_id, BLOCKED_CODE, f"{action} from a mirror is not allowed")
            return Outcome("blocked" if self._reply(index, text) else "reply_dropped")
        if any(call.mirror == index for call in self._calls()):
            text = call_error(mirror_id, BUSY_CODE, "a CALL of this mirror is in progress")
            return Outcome("busy" if self._reply(index, text) else "reply_dropped")
        payload = message.data[message.payload_start : message.payload_end]
        if not payload.startswith(b"{"):
            return Outcome("invalid")
        self._counter += 1
        charger_id = f"{self._prefix}{self._counter}"
        text = b"[2,%s,%s,%s]" % (orjson.dumps(charger_id), orjson.dumps(action), payload)
        deadline = now + policy.call_timeout
        self.waiting.append(MirrorCall(index, mirror_id, charger_id, text, deadline))
        return Outcome("allowed")

    def _calls(self) -> list[MirrorCall]:
        return [*self.waiting, *([self.out] if self.out is not None else [])]

    def _reply(self, index: int, text: bytes) -> bool:
        replies = self.queues[index].replies
        if len(replies) >= _REPLIES:
            return False
        replies.append(text)
        return True

    def next_call(self) -> MirrorCall | None:
        """The mirror CALL to send the charger now, if one may go (marked as out)."""
        if self.out is not None or self.primary_call is not None or not self.waiting:
            return None
        self.out = self.waiting.popleft()
        return self.out

    def expire(self, now: float) -> list[int]:
        """Answer the mirror CALLs whose deadline passed; returns their mirrors."""
        expired = [call for call in self._calls() if call.deadline <= now]
        for call in expired:
            if call is self.out:
                self.out = None
                self._late.append(call.charger_id)
            else:
                self.waiting.remove(call)
            self._reply(
                call.mirror,
                call_error(call.mirror_id, TIMEOUT_CODE, "the charger did not answer in time"),
            )
        return [call.mirror for call in expired]

    def next_deadline(self) -> float:
        """When `expire` has something to do next (inf: nothing)."""
        return min((call.deadline for call in self._calls()), default=float("inf"))

    def mirror_lost(self, index: int) -> int:
        """Mirror `index` disconnected: forget its waiting CALL and queued replies (a CALL that is
        out stays out until answered or expired: the charger has it). Returns how many queued
        texts were dropped."""
        for call in [c for c in self.waiting if c.mirror == index]:
            self.waiting.remove(call)
        replies = self.queues[index].replies
        n = len(replies)
        replies.clear()
        return n


def _with_id(text: bytes, unique_id: str) -> bytes | None:
    """`text` (an OCPP-J answer) with its unique id replaced; None if it is not one."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(frame, list) or len(frame) < 2:
        return None
    frame[1] = unique_id
    return orjson.dumps(frame)


class FrameSplitter:
    """Cuts a WebSocket byte stream into whole frames, each as received.

    `feed` returns the frames the bytes completed and keeps the rest. A frame announcing more than
    `limit` payload bytes is not waited for: the splitter gives up (`broken`) and hands back
    what it holds, and from then on passes bytes through (the link's own reader refuses the frame).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self.broken = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.broken:
            return [data] if data else []
        # Usually nothing is held: cut `data` itself, and keep only an incomplete rest.
        stream = data if not self._buffer else bytes(self._buffer) + data
        frames: list[bytes] = []
        start, end = 0, len(stream)
        while True:
            size = _frame_size(stream, start)
            if size is None or size > end:
                if size is not None and size - start > self._limit + 14:
                    self.broken = True
                    frames.append(stream[start:])
                    self._buffer.clear()
                    return frames
                break
            frames.append(stream if start == 0 and size == end else stream[start:size])
            start = size
        self._buffer[:] = stream[start:]
        return frames

    def give_up(self) -> bytes:
        """Pass bytes through from now on; returns what was held of an incomplete frame."""
        self.broken = True
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


def _frame_size(buffer: bytes, start: int) -> int | None:
    """Where the frame starting at `start` ends (None: its header is not complete yet)."""
    available = len(buffer) - start
    if available < 2:
        return None
    second = buffer[start + 1]
    length, header = second & 0x7F, 2
    if length == 126:
        header = 4
        if available < header:
            return None
        length = int.from_bytes(buffer[start + 2 : start + 4], "big")
    elif length == 127:
        header = 10
        if available < header:
            return None
        length = int.from_bytes(buffer[start + 2 : start + 10], "big")
    if second & 0x80:
        header += 4
    return start + header + length
