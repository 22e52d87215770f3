"""A fast fake upstream back-office (CSMS) for benchmarks.

Serves WebSocket on /ocpp/<identity> (subprotocols ocpp1.6 and ocpp2.0.1: the first one the
charger offers that is supported) and answers every OCPP CALL at once with a CALLRESULT: a
realistic payload for the handful of actions whose answers chargers depend on (BootNotification,
Heartbeat, Authorize, Start/StopTransaction), `{}` for everything else. Pings get pongs, a close
gets its close echoed.

It works on raw frames with the project codec, one `receive_some` and at most one `send_all` per
batch of frames, so it stays cheap per frame and is not the bottleneck of a run.

    python -m bench.fake_csms --port 9001 [--host 127.0.0.1] [--max-seconds 600]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable

import orjson
import trio

from bench import wire

SUPPORTED = ("ocpp1.6", "ocpp2.0.1")
PATH_PREFIX = "/ocpp/"

_transaction_ids = itertools.count(1)


def _now() -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()


_ACCEPTED_16 = b'{"idTagInfo":{"status":"Accepted"}}'

# Answer payloads per action: callables so timestamps and transaction ids are fresh.
ANSWERS: dict[str, Callable[[], bytes]] = {
    "BootNotification": lambda: b'{"status":"Accepted","currentTime":"%s","interval":300}' % _now(),
    "Heartbeat": lambda: b'{"currentTime":"%s"}' % _now(),
    "StartTransaction": lambda: b'{"idTagInfo":{"status":"Accepted"},"transactionId":%d}'
    % next(_transaction_ids),
    "StopTransaction": lambda: _ACCEPTED_16,
}
ANSWERS_16 = {**ANSWERS, "Authorize": lambda: _ACCEPTED_16}
ANSWERS_201 = {**ANSWERS, "Authorize": lambda: b'{"idTokenInfo":{"status":"Accepted"}}'}


def answer(message: wire.MessageLike, answers: dict[str, Callable[[], bytes]]) -> bytes:
    """The CALLRESULT text for a CALL message."""
    make = answers.get(message.action or "")
    payload = make() if make else b"{}"
    return b"[3," + orjson.dumps(message.unique_id) + b"," + payload + b"]"


async def serve_connection(stream: trio.SocketStream) -> None:
    """Handshake, then answer frames until the charger (or proxy) closes; always closes `stream`."""
    try:
        accepted = await wire.server_handshake(stream, PATH_PREFIX, SUPPORTED)
        if accepted is None:
            return
        _target, subprotocol, pending = accepted
        answers = ANSWERS_201 if subprotocol == "ocpp2.0.1" else ANSWERS_16
        reader = wire.FrameReader(from_client=True)
        encode, TEXT = wire.encode_frame, wire.TEXT
        while True:
            data = pending or await stream.receive_some(65536)
            pending = b""
            if not data:
                return
            out = []
            for message in reader.feed(data):
                if message.opcode == TEXT:
                    if message.message_type == wire.CALL:
                        out.append(encode(TEXT, answer(message, answers), mask=False))
                elif message.opcode == wire.PING:
                    out.append(encode(wire.PONG, message.data, mask=False))
                elif message.opcode == wire.CLOSE:
                    out.append(encode(wire.CLOSE, message.data[:2], mask=False))
                    await stream.send_all(b"".join(out))
                    return
            if out:
                await stream.send_all(b"".join(out))
    except (trio.BrokenResourceError, trio.ClosedResourceError, wire.ProtocolError, wire.HandshakeError):
        pass
    finally:
        await stream.aclose()


async def serve(host: str, port: int, max_seconds: float, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on host:port and serve connections for `max_seconds` (0: until cancelled)."""
    with trio.move_on_after(max_seconds or float("inf")):
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, serve_connection, listeners)
            task_status.started()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_csms", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-seconds", type=float, default=0, help="stop after this long (0: never)")
    args = parser.parse_args(argv)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, args.host, args.port, args.max_seconds)
            print(f"fake CSMS on ws://{args.host}:{args.port}{PATH_PREFIX}<identity> ({wire.CODEC})", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
