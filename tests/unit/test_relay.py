"""The relay on memory streams, with an in-memory outbox store and a clock that jumps.

The charger and the back-office are played by the test over `trio.testing.memory_stream_pair`
(real WebSocket frames, written and read with the codec); the back-office is dialled through a
plan of outcomes (down, refusing, or a new connection). The wall clock the relay stamps entries
with follows Trio's clock, so retry intervals and redial back-off run in virtual time.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest
import trio
from trio.testing import memory_stream_pair, wait_all_tasks_blocked

from proxy.capture.capture import Capture
from proxy.capture.events import Event
from proxy.capture.tracker import Tracker
from proxy.forward.backoff import RedialBackoff
from proxy.forward.policy import LinkEnd
from proxy.forward.relay import ChargerRefused, Relay, UpstreamUnavailable
from proxy.forward.side import Side
from proxy.outbox.entries import Entry
from proxy.outbox.policy import REPLAY_ID_PREFIX
from proxy.runtime.config import OutboxSettings
from proxy.runtime.metrics import ProxyMetrics
from proxy.wire.codec import (
    CALL,
    CALLERROR,
    CALLRESULT,
    CLOSE,
    TEXT,
    FrameReader,
    Message,
    encode_close,
    encode_frame,
)
from proxy.wire.ocpp import CloseCode
from testkit.memory_outbox import MemoryOutboxStore

METRICS = ProxyMetrics()
EPOCH = 1_800_000_000.0  # the wall clock at Trio time 0
SETTINGS = OutboxSettings(
    redial_min=1.0, redial_max=8.0, retry_interval=30.0, retry_attempts=3, call_timeout=10.0
)
STATUS = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
METER = {
    "connectorId": 1,
    "meterValue": [{"timestamp": "2026-12-06T10:00:00Z", "sampledValue": [{"value": "5"}]}],
}


def wall_clock() -> float:
    return EPOCH + trio.current_time()


class Peer:
    """The far end of one side: the charger (a client: masks its frames) or the back-office."""

    def __init__(self, stream: trio.abc.Stream, *, client: bool) -> None:
        self.stream = stream
        self.client = client
        self.reader = FrameReader(from_client=not client)
        self.received: deque[Message] = deque()

    async def call(self, unique_id: str, action: str, payload: dict[str, Any]) -> None:
        await self.send([CALL, unique_id, action, payload])

    async def send(self, message: list[Any]) -> None:
        frame = encode_frame(TEXT, json.dumps(message).encode(), mask=self.client)
        await self.stream.send_all(frame)

    async def receive(self) -> Message:
        """The next message; raises EOFError when the stream ends."""
        while not self.received:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError
            self.received.extend(self.reader.feed(bytes(data)))
        return self.received.popleft()

    async def answer_close(self) -> int | None:
        """Read up to the proxy's close frame, answer it; its code."""
        while (message := await self.receive()).opcode != CLOSE:
            pass
        await self.stream.send_all(encode_close(message.close_code or 1000, mask=self.client))
        return message.close_code


def side_pair(name: str) -> tuple[Side, Peer]:
    """A side for the relay and the peer at its other end."""
    ours, theirs = memory_stream_pair()
    charger = name == "charger"
    side = Side(
        name, ours, FrameReader(from_client=charger), METRICS.direction(name), mask=not charger
    )
    return side, Peer(theirs, client=charger)


class BackOffice:
    """Dials follow `plan` ("down", "refuse", "up"; "down" once it runs out); times are kept."""

    def __init__(self, *plan: str) -> None:
        self.plan = deque(plan)
        self.dials: list[float] = []
        self._send, self.connections = trio.open_memory_channel[Peer](10)

    async def connect(self) -> Side:
        self.dials.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        outcome = self.plan.popleft() if self.plan else "down"
        if outcome == "down":
            raise UpstreamUnavailable("connection refused")
        if outcome == "refuse":
            raise ChargerRefused("401")
        side, peer = side_pair("upstream")
        self._send.send_nowait(peer)
        return side


async def relay_for(
    store: MemoryOutboxStore, back_office: BackOffice, **options: Any
) -> tuple[Relay, Peer]:
    claim = await store.claim("CP-1", "ocpp1.6")
    claim.outbox.proof = "password"
    charger, peer = side_pair("charger")
    relay = Relay(
        "CP-1",
        charger,
        claim,
        back_office.connect,
        METRICS.outbox,
        close_timeout=1.0,
        clock=wall_clock,
        backoff=RedialBackoff(SETTINGS.redial_min, SETTINGS.redial_max),
        **options,
    )
    return relay, peer


async def run_into(relay: Relay, ended: list[LinkEnd]) -> None:
    ended.append(await relay.run())


def queue(store: MemoryOutboxStore, *actions: str) -> None:
    """Entries stored before the relay claims the outbox (queued by an earlier link)."""
    stored = store.stored("CP-1")
    for action in actions:
        seq = stored.next_seq
        payload = json.dumps(STATUS if action == "StatusNotification" else METER).encode()
        stored.entries[seq] = Entry(seq, action, payload, EPOCH - 60, proof="password")
        stored.next_seq = seq + 1


async def test_offline_calls_are_stored_and_answered_while_redials_back_off(autojump_clock):
    store, back_office = MemoryOutboxStore(SETTINGS), BackOffice()
    relay, charger = await relay_for(store, back_office)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        await charger.call("s1", "StatusNotification", STATUS)
        answer = await charger.receive()
        await trio.sleep(60)
        relay.stop(LinkEnd.SHUTDOWN)
        assert await charger.answer_close() == CloseCode.GOING_AWAY

    assert (answer.message_type, answer.unique_id) == (CALLRESULT, "s1")
    [entry] = store.stored("CP-1").entries.values()
    assert (entry.action, json.loads(entry.payload), entry.proof) == (
        "StatusNotification",
        STATUS,
        "password",
    )
    assert entry.received_at == pytest.approx(EPOCH, abs=1)
    gaps = [b - a for a, b in zip(back_office.dials, back_office.dials[1:])]
    expected = [1.0, 2.0, 4.0] + [8.0] * (len(gaps) - 3)
    assert len(gaps) >= 8
    for gap, delay in zip(gaps, expected, strict=True):
        assert 0.8 * delay <= gap <= 1.2 * delay


async def test_the_outbox_is_replayed_in_order_then_the_relay_hands_back(autojump_clock):
    store, back_office = MemoryOutboxStore(SETTINGS), BackOffice("down", "down", "up")
    queue(store, "StatusNotification")
    relay, charger = await relay_for(store, back_office)
    ended: list[LinkEnd] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_into, relay, ended)
        await charger.call("m1", "MeterValues", METER)  # queued behind the stored entry
        assert (await charger.receive()).unique_id == "m1"
        upstream = await back_office.connections.receive()
        replayed = []
        for _ in range(2):
            call = await upstream.receive()
            replayed.append((call.unique_id, call.action))
            await upstream.send([CALLRESULT, call.unique_id, {}])
        await store.until(lambda: not store.stored("CP-1").entries)
        # Live now: a CALL goes through as sent, its answer comes back, and the relay hands back.
        await charger.call("h1", "Heartbeat", {})
        live = await upstream.receive()
        await upstream.send([CALLRESULT, "h1", {"currentTime": "2026-12-06T10:00:00Z"}])
        assert (await charger.receive()).unique_id == "h1"
        await relay.finished.wait()

    assert replayed == [
        (f"{REPLAY_ID_PREFIX}1-0", "StatusNotification"),
        (f"{REPLAY_ID_PREFIX}2-0", "MeterValues"),
    ]
    assert (live.unique_id, live.action) == ("h1", "Heartbeat")
    assert ended == [LinkEnd.HANDBACK]
    assert len(back_office.dials) == 3


async def test_a_callerror_is_retried_after_the_retry_interval_then_parked(autojump_clock):
    store, back_office = MemoryOutboxStore(SETTINGS), BackOffice()
    queue(store, "StatusNotification")
    upstream_side, upstream = side_pair("upstream")
    relay, _charger = await relay_for(store, back_office, upstream=upstream_side)
    sent_at = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        for _ in range(SETTINGS.retry_attempts):
            call = await upstream.receive()
            sent_at.append(trio.current_time())
            await upstream.send([CALLERROR, call.unique_id, "InternalError", "try later", {}])
        await store.until(lambda: store.stored("CP-1").dead)
        relay.stop(LinkEnd.SHUTDOWN)

    assert [round(b - a) for a, b in zip(sent_at, sent_at[1:])] == [30, 60]  # interval × attempt
    [(entry, reason)] = store.stored("CP-1").dead
    assert entry.attempts == 3 and reason.startswith("CALLERROR InternalError")
    assert not store.stored("CP-1").entries
    assert back_office.dials == []  # the connection stayed up throughout


async def test_an_unanswered_replay_drops_the_connection_and_goes_out_again(autojump_clock):
    store, back_office = MemoryOutboxStore(SETTINGS), BackOffice("up", "up")
    queue(store, "StatusNotification")
    relay, _charger = await relay_for(store, back_office)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        first = await back_office.connections.receive()
        unanswered = await first.receive()
        asked_at = trio.current_time()
        assert await first.answer_close() == CloseCode.GOING_AWAY
        dropped_at = trio.current_time()
        second = await back_office.connections.receive()
        again = await second.receive()
        await second.send([CALLRESULT, again.unique_id, {}])
        await store.until(lambda: not store.stored("CP-1").entries)
        relay.stop(LinkEnd.SHUTDOWN)

    assert dropped_at - asked_at == pytest.approx(SETTINGS.call_timeout, abs=0.1)
    assert again.unique_id == unanswered.unique_id == f"{REPLAY_ID_PREFIX}1-0"  # same attempt
    assert back_office.dials[1] - back_office.dials[0] >= 0.8 * SETTINGS.redial_min


async def test_a_redial_the_back_office_refuses_closes_the_charger_with_1008(autojump_clock):
    store, back_office = MemoryOutboxStore(SETTINGS), BackOffice("down", "refuse")
    relay, charger = await relay_for(store, back_office)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        assert await charger.answer_close() == CloseCode.POLICY_VIOLATION
        await relay.finished.wait()
    assert len(back_office.dials) == 2


@pytest.mark.parametrize(
    ("fault", "end"),
    [("newer claim", LinkEnd.REPLACED), ("store down", LinkEnd.STORE_UNAVAILABLE)],
)
async def test_a_write_the_store_refuses_ends_the_relay(autojump_clock, fault, end):
    store, back_office = MemoryOutboxStore(SETTINGS), BackOffice()
    relay, charger = await relay_for(store, back_office)
    ended: list[LinkEnd] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_into, relay, ended)
        await charger.call("s1", "StatusNotification", STATUS)
        assert (await charger.receive()).unique_id == "s1"
        if fault == "newer claim":
            await store.claim("CP-1", "ocpp1.6")  # another link took the charger over
        else:
            store.failing = True
        await charger.call("s2", "StatusNotification", STATUS)
        assert await charger.answer_close() == CloseCode.GOING_AWAY
    assert ended == [end]
    assert [e.seq for e in store.stored("CP-1").entries.values()] == [1]  # s2 was never answered


async def test_an_offline_answers_events_reach_the_journal_before_a_rename_learned_meanwhile(
    autojump_clock,
):
    """A MeterValues answered offline while the replay learns its transaction's real id: its
    events (under the provisional id) are submitted before the rename, though its outbox entry
    is stored after the replay's answer (else the session store keeps a session under the
    provisional id that nothing renames)."""
    store, back_office = MemoryOutboxStore(SETTINGS), BackOffice("down", "up")
    submitted: list[Event] = []
    capture = Capture(Tracker("CP-1", "ocpp1.6"), submitted.extend)
    relay, charger = await relay_for(store, back_office, capture=capture)
    start = {"connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": "2026-12-06T10:00:00Z"}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        await charger.call("s1", "StartTransaction", start)
        provisional = json.loads((await charger.receive()).data)[2]["transactionId"]
        store.appends_wait = trio.Event()  # the next entry's commit is slow
        await charger.call("m1", "MeterValues", {**METER, "transactionId": provisional})
        upstream = await back_office.connections.receive()
        replayed = await upstream.receive()
        assert replayed.action == "StartTransaction"
        await upstream.send(
            [
                CALLRESULT,
                replayed.unique_id,
                {"transactionId": 7, "idTagInfo": {"status": "Accepted"}},
            ]
        )
        await wait_all_tasks_blocked()  # the rename is made; the MeterValues entry not yet stored
        store.appends_wait.set()
        assert (await charger.receive()).unique_id == "m1"
        await wait_all_tasks_blocked()
        relay.stop(LinkEnd.SHUTDOWN)

    kinds = [(type(e).__name__, getattr(e, "transaction_id", None)) for e in submitted]
    assert kinds == [
        ("TransactionStarted", str(provisional)),
        ("MeterValuesReported", str(provisional)),
        ("TransactionIdAssigned", None),
    ]
