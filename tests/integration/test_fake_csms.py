"""The fake back-office (`testkit.fake_csms`) on real 127.0.0.1 sockets: answers, recording,
stop/start, its own CALLs.

Chargers are trio-websocket clients (an independent WebSocket implementation) or raw ones built
on `testkit.websocket` and the reference codec, which see every frame the fake CSMS sends.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections import deque

import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from proxy.wire.codec import CLOSE, PING, PONG, TEXT
from testkit import websocket
from testkit.fake_csms import PROVISIONAL_IDS_FROM, CallFailed, FakeCsms, ReceivedCall
from testkit.reference_codec import ReferenceFrameReader, ReferenceMessage, reference_encode_frame

START = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2025-01-01T00:00:00Z"}


class RawCharger:
    """A charger writing hand-made frames and reading every frame the CSMS sends."""

    def __init__(self, stream: trio.SocketStream, pending: bytes) -> None:
        self.stream = stream
        self.reader = ReferenceFrameReader(from_client=False)
        self.inbox: deque[ReferenceMessage] = deque(self.reader.feed(pending))

    @classmethod
    async def connect(cls, port: int, identity: str, buffer_size: int | None = None) -> RawCharger:
        """Connect and upgrade (ocpp1.6); `buffer_size` shrinks the socket's kernel buffers."""
        sock = trio.socket.socket()
        if buffer_size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        protocol = "ocpp1.6"
        chosen, pending = await websocket.client_handshake(
            stream, f"127.0.0.1:{port}", f"/ocpp/{identity}", [protocol]
        )
        assert chosen == protocol
        return cls(stream, pending)

    async def send(self, opcode: int, payload: bytes) -> None:
        await self.stream.send_all(reference_encode_frame(opcode, payload, mask=True))

    async def send_call(self, unique_id: str, action: str, payload: dict) -> None:
        await self.send(TEXT, json.dumps([2, unique_id, action, payload]).encode())

    async def receive(self) -> ReferenceMessage | None:
        """The next message from the CSMS; None once it has closed the connection."""
        while not self.inbox:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.inbox.extend(self.reader.feed(data))
        return self.inbox.popleft()

    async def until_close(self) -> tuple[list[ReferenceMessage], ReferenceMessage]:
        """The messages before the CSMS's close frame, and that frame."""
        before: list[ReferenceMessage] = []
        while (message := await self.receive()) is not None:
            if message.opcode == CLOSE:
                return before, message
            before.append(message)
        raise AssertionError(f"connection ended without a close frame after {before}")

    async def rest(self) -> list[ReferenceMessage]:
        """Every message until the CSMS closes the connection."""
        messages: list[ReferenceMessage] = []
        while (message := await self.receive()) is not None:
            messages.append(message)
        return messages


@pytest.fixture
async def csms(nursery):
    server = FakeCsms(record=True, first_transaction_id=100)
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def raw():
    """Connects raw chargers and closes them all at teardown, whatever the test did."""
    opened: list[RawCharger] = []

    async def connect(port: int, identity: str, buffer_size: int | None = None) -> RawCharger:
        opened.append(await RawCharger.connect(port, identity, buffer_size))
        return opened[-1]

    yield connect
    for charger in opened:
        await charger.stream.aclose()


def url(csms: FakeCsms, identity: str) -> str:
    return f"ws://127.0.0.1:{csms.port}/ocpp/{identity}"


def stop_in_background(nursery: trio.Nursery, csms: FakeCsms) -> trio.Event:
    """Start `csms.stop()` in its own task; the event is set when it has returned."""
    stopped = trio.Event()

    async def stop() -> None:
        await csms.stop()
        stopped.set()

    nursery.start_soon(stop)
    return stopped


async def assert_refused(port: int) -> None:
    with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        await sock.connect(("127.0.0.1", port))


async def test_calls_are_answered_and_recorded_per_identity_in_order(csms):
    with trio.fail_after(10):
        async with (
            open_websocket_url(url(csms, "CP%2016"), subprotocols=["ocpp1.6"]) as v16,
            open_websocket_url(url(csms, "CP201"), subprotocols=["ocpp2.0.1"]) as v201,
        ):
            exchanges = [
                (v16, [2, "a", "StartTransaction", START]),
                (v201, [2, "b", "Authorize", {"idToken": {"idToken": "T", "type": "ISO14443"}}]),
                (
                    v16,
                    [
                        2,
                        "c",
                        "MeterValues",
                        {"connectorId": 1, "transactionId": 100, "meterValue": []},
                    ],
                ),
                (
                    v16,
                    [
                        2,
                        "d",
                        "StopTransaction",
                        {"transactionId": 100, "meterStop": 5, "timestamp": "t"},
                    ],
                ),
                (v201, [2, "e", "TransactionEvent", {"eventType": "Started", "seqNo": 0}]),
            ]
            answers = []
            for ws, call in exchanges:
                await ws.send_message(json.dumps(call))
                answers.append(json.loads(await ws.get_message()))
    accepted = {"idTagInfo": {"status": "Accepted"}}
    assert answers == [
        [3, "a", {**accepted, "transactionId": 100}],
        [3, "b", {"idTokenInfo": {"status": "Accepted"}}],
        [3, "c", {}],
        [3, "d", accepted],
        [3, "e", {}],
    ]
    assert csms.received == {
        "CP 16": [
            ReceivedCall("StartTransaction", START, "a", {**accepted, "transactionId": 100}),
            ReceivedCall("MeterValues", exchanges[2][1][3], "c", {}),
            ReceivedCall("StopTransaction", exchanges[3][1][3], "d", accepted),
        ],
        "CP201": [
            ReceivedCall(
                "Authorize", exchanges[1][1][3], "b", {"idTokenInfo": {"status": "Accepted"}}
            ),
            ReceivedCall("TransactionEvent", exchanges[4][1][3], "e", {}),
        ],
    }


async def test_pings_get_pongs_and_a_close_is_echoed_without_recording(nursery, raw):
    csms = FakeCsms()
    port = await nursery.start(csms.serve)
    charger = await raw(port, "CP-ping")
    await charger.send(PING, b"hi")
    await charger.send_call("h1", "Heartbeat", {})
    await charger.send(CLOSE, struct.pack("!H", 1000))
    with trio.fail_after(10):
        pong, answer, close = await charger.rest()
    assert (pong.opcode, pong.data) == (PONG, b"hi")
    assert json.loads(answer.data)[:2] == [3, "h1"]
    assert (close.opcode, close.close_code) == (CLOSE, 1000)
    assert csms.received == {}


async def test_stop_answers_what_it_read_closes_with_1001_and_refuses_new_connections(
    csms, nursery, raw
):
    charger = await raw(csms.port, "CP-stop")
    await charger.send_call("s1", "StartTransaction", START)
    await trio.testing.wait_all_tasks_blocked()  # the CSMS has read the CALL
    assert csms.connected("CP-stop")
    stopped = stop_in_background(nursery, csms)
    with trio.fail_after(10):
        before, close = await charger.until_close()
        assert [json.loads(m.data) for m in before] == [
            [3, "s1", {"idTagInfo": {"status": "Accepted"}, "transactionId": 100}]
        ]
        assert (close.close_code, close.close_reason) == (1001, "going away")
        await charger.send(CLOSE, close.data[:2])
        assert await charger.rest() == []
        await stopped.wait()
    assert not csms.connected("CP-stop")
    await assert_refused(csms.port)
    assert [call.unique_id for call in csms.received["CP-stop"]] == ["s1"]


async def test_frames_read_after_the_stop_are_neither_answered_nor_recorded(csms, nursery, raw):
    charger = await raw(csms.port, "CP-late")
    await charger.send_call("early", "Heartbeat", {})
    with trio.fail_after(10):
        assert json.loads((await charger.receive()).data)[1] == "early"
        stopped = stop_in_background(nursery, csms)
        before, close = await charger.until_close()
        assert before == [] and close.close_code == 1001
        await charger.send_call("late", "StopTransaction", {"transactionId": 100, "meterStop": 1})
        await charger.send(PING, b"late")
        await charger.send(CLOSE, close.data[:2])
        assert await charger.rest() == []
        await stopped.wait()
    assert [call.unique_id for call in csms.received["CP-late"]] == ["early"]


def send_now(charger: RawCharger, data: bytes) -> None:
    """Write `data` to the charger's socket without a checkpoint: no other task runs before the
    caller's next await, so the CSMS cannot have read it by then."""
    with socket.socket(fileno=os.dup(charger.stream.socket.fileno())) as sock:
        assert sock.send(data) == len(data)


async def test_calls_arriving_as_the_stop_is_decided_are_neither_answered_nor_recorded(csms, raw):
    chargers = [await raw(csms.port, f"CP{n}") for n in range(20)]
    seen: dict[str, list] = {}

    async def charger_side(identity: str, charger: RawCharger) -> None:
        before, close = await charger.until_close()
        assert (close.close_code, close.close_reason) == (1001, "going away")
        seen[identity] = [json.loads(m.data) for m in before]
        await charger.send(CLOSE, close.data[:2])

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n, charger in enumerate(chargers):
                nursery.start_soon(charger_side, f"CP{n}", charger)
            calls = [
                reference_encode_frame(TEXT, b'[2,"s%d","StartTransaction",{}]' % n, mask=True)
                for n in range(20)
            ]
            for charger, call in zip(chargers[:10], calls[:10]):
                send_now(charger, call)
            await trio.testing.wait_all_tasks_blocked()  # answered, and the answers read
            for charger, call in zip(chargers[10:], calls[10:]):
                send_now(charger, call)
            await csms.stop()
    answered = {identity: answers for identity, answers in seen.items() if answers}
    assert sorted(answered) == sorted(f"CP{n}" for n in range(10))
    assert csms.received == {
        identity: [ReceivedCall("StartTransaction", {}, uid, answer) for _, uid, answer in answers]
        for identity, answers in answered.items()
    }
    assert sorted(answers[0][2]["transactionId"] for answers in answered.values()) == list(
        range(100, 110)
    )


async def test_a_batch_being_answered_when_the_stop_comes_is_finished_and_recorded(
    csms, nursery, raw
):
    """The charger stops reading, so the CSMS blocks half-way through sending a batch's answers."""
    charger = await raw(csms.port, "CP-jam", buffer_size=4096)
    produced = 0
    sending = enough = False
    producer_done = trio.Event()

    async def produce() -> None:
        nonlocal produced, sending
        while not enough:
            ids = range(produced, produced + 1000)
            sending = True
            await charger.stream.send_all(
                b"".join(
                    websocket.encode_frame(TEXT, b'[2,"h%d","Heartbeat",{}]' % n, mask=True)
                    for n in ids
                )
            )
            sending = False
            produced += len(ids)
        producer_done.set()

    nursery.start_soon(produce)
    await trio.testing.wait_all_tasks_blocked()
    assert sending  # jammed: the CSMS reads no more because it is stuck sending answers
    stopped = stop_in_background(nursery, csms)
    await trio.testing.wait_all_tasks_blocked()  # the stop is decided
    enough = True
    with trio.fail_after(10):
        before, close = await charger.until_close()
        assert close.close_code == 1001
        await producer_done.wait()
        await charger.send(CLOSE, close.data[:2])
        assert await charger.rest() == []
        await stopped.wait()
    answered = [json.loads(m.data)[1] for m in before]
    assert 0 < len(answered) < produced
    assert (
        [call.unique_id for call in csms.received["CP-jam"]]
        == answered
        == [f"h{n}" for n in range(len(answered))]
    )


async def test_start_listens_again_on_the_same_port_and_transaction_ids_go_on(csms, raw):
    port = csms.port
    ids = []
    for round in range(3):
        charger = await raw(port, "CP-restart")
        with trio.fail_after(10):
            await csms.wait_connected("CP-restart")
            await charger.send_call(f"s{round}", "StartTransaction", START)
            ids.append(json.loads((await charger.receive()).data)[2]["transactionId"])
            async with trio.open_nursery() as nursery:
                stop_in_background(nursery, csms)
                _, close = await charger.until_close()
                assert close.close_code == 1001
                await charger.send(CLOSE, close.data[:2])
        await assert_refused(port)
        await csms.start()
        assert csms.port == port
    assert ids == [100, 101, 102]
    assert [call.answer["transactionId"] for call in csms.received["CP-restart"]] == ids


async def test_wait_connected_returns_when_the_charger_arrives(csms, nursery):
    arrived = trio.Event()

    async def wait() -> None:
        await csms.wait_connected("CP-later")
        arrived.set()

    nursery.start_soon(wait)
    await trio.testing.wait_all_tasks_blocked()
    assert not arrived.is_set() and not csms.connected("CP-later")
    with trio.fail_after(10):
        async with open_websocket_url(url(csms, "CP-later"), subprotocols=["ocpp1.6"]):
            await arrived.wait()
            assert csms.connected("CP-later")


async def test_call_returns_the_chargers_callresult_and_raises_on_callerror(csms, nursery):
    seen = []
    with trio.fail_after(10):
        async with open_websocket_url(url(csms, "CP-call"), subprotocols=["ocpp1.6"]) as ws:

            async def charger() -> None:
                call = json.loads(await ws.get_message())
                seen.append(call[2:])
                await ws.send_message(json.dumps([3, call[1], {"status": "Accepted"}]))
                call = json.loads(await ws.get_message())
                seen.append(call[2:])
                await ws.send_message(json.dumps([4, call[1], "NotSupported", "not here", {}]))

            nursery.start_soon(charger)
            await csms.wait_connected("CP-call")
            assert await csms.call("CP-call", "RemoteStopTransaction", {"transactionId": 5}) == {
                "status": "Accepted"
            }
            with pytest.raises(CallFailed, match="NotSupported"):
                await csms.call("CP-call", "Reset", {"type": "Soft"})
    assert seen == [["RemoteStopTransaction", {"transactionId": 5}], ["Reset", {"type": "Soft"}]]
    assert "CP-call" not in csms.received  # the CSMS's own CALLs are not among those it received


async def test_call_fails_when_the_charger_is_not_connected_or_goes_away(csms, raw):
    with pytest.raises(CallFailed, match="not connected"):
        await csms.call("CP-nobody", "Reset", {"type": "Soft"})
    charger = await raw(csms.port, "CP-gone")
    await csms.wait_connected("CP-gone")
    async with trio.open_nursery() as nursery:

        async def hang_up_on_the_call() -> None:
            assert (await charger.receive()).action == "Reset"
            await charger.stream.aclose()

        nursery.start_soon(hang_up_on_the_call)
        with pytest.raises(CallFailed, match="went away"):
            await csms.call("CP-gone", "Reset", {"type": "Soft"})


async def test_call_times_out_when_the_charger_does_not_answer(csms, autojump_clock):
    async with open_websocket_url(url(csms, "CP-mute"), subprotocols=["ocpp1.6"]):
        await csms.wait_connected("CP-mute")
        with pytest.raises(trio.TooSlowError):
            await csms.call("CP-mute", "Reset", {"type": "Soft"}, timeout=5)


def test_transaction_ids_stay_below_the_provisional_range():
    with pytest.raises(ValueError):
        FakeCsms(first_transaction_id=PROVISIONAL_IDS_FROM)
    with pytest.raises(ValueError):
        FakeCsms(first_transaction_id=0)
