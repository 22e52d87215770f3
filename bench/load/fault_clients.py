"""Hostile clients for `bench.faults`: identity spoofers and a password flood, raw WebSocket upgrades.

Each client is a Trio task that opens a TCP connection from one of `--sources` (loopback
addresses other than the fleet's), sends an HTTP upgrade for `/ocpp/<identity>` and reads the
status line, again and again until `--seconds` have passed (no pause, no back-off: Retry-After is
ignored, as an attacker would). Every attempt is bounded by `--attempt-timeout`.

`--mode spoof` (an attacker during a back-office outage): identities are real chargers'
(`--identities`, a file with one a line); attempts alternate between no Authorization header, a
Basic header with the identity and a wrong password, and a Basic header with another identity's
name. A client that is ever admitted (101) acts like a charger at once, with payloads that carry
a marker (`MARKER`) so they can be found upstream and in the database: BootNotification
(vendor `MARKER`), StartTransaction (idTag `MARKER`, meterStart `MARKER_METER`) and
StopTransaction, each CALL answered or not within the attempt timeout; then it closes.

`--mode flood` (a password flood): identities are `--identities` too (chargers' own, or made-up
ones routed to a managed route), always with a Basic header carrying the identity and a wrong
password that changes every attempt. A 101 is counted (it must never happen) and closed at once.

At the end a JSON summary goes to stdout: attempts, answers by HTTP status (and by credential
kind for spoof), attempts per second of the run, admitted clients with what they were answered,
and connection errors; also when stopped early by SIGTERM or SIGINT. Only loopback targets and sources are accepted.

    python -m bench.load.fault_clients --url ws://127.0.0.1:9000/ocpp --mode spoof --identities ids.txt \\
        --clients 100 --sources 127.0.0.9 --seconds 60
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from typing import Any

import orjson
import trio

from bench.load.loadgen import loopback_target
from testkit import websocket

MARKER = "ATTACKER"
MARKER_METER = 987_654_321
CREDENTIALS = ("none", "wrong_password", "other_identity")


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class Clients:
    """The clients of one process and what they saw."""

    def __init__(self, args: argparse.Namespace, identities: list[str]) -> None:
        self.args = args
        self.host, self.port, self.path = loopback_target(args.url)
        self.identities = identities
        self.statuses: Counter[str] = Counter()
        self.by_credential: dict[str, Counter[str]] = {kind: Counter() for kind in CREDENTIALS}
        self.per_second: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.admitted: list[dict[str, Any]] = []
        self.attempts = 0
        self.started = time.time()
        self.stopped_by_signal = False

    async def run(self) -> None:
        """All clients until `--seconds` have passed or SIGTERM/SIGINT (then the summary is still written)."""
        deadline = trio.current_time() + self.args.seconds
        async with trio.open_nursery() as outer:
            outer.start_soon(self._stop_on_signal, outer.cancel_scope)
            async with trio.open_nursery() as nursery:
                for index in range(self.args.clients):
                    nursery.start_soon(self._client, index, deadline)
            outer.cancel_scope.cancel()

    async def _stop_on_signal(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self.stopped_by_signal = True
                scope.cancel()
                return

    async def _client(self, index: int, deadline: float) -> None:
        rng = random.Random(index)
        source = self.args.sources[index % len(self.args.sources)]
        n = 0
        while trio.current_time() < deadline:
            identity = rng.choice(self.identities)
            if self.args.mode == "flood":
                credential = "wrong_password"
                authorization: str | None = basic(identity, f"guess-{index}-{n}")
            else:
                credential = CREDENTIALS[(index + n) % len(CREDENTIALS)]
                authorization = {
                    "none": None,
                    "wrong_password": basic(identity, f"guess-{index}-{n}"),
                    "other_identity": basic(rng.choice(self.identities), "guess"),
                }[credential]
            n += 1
            self.attempts += 1
            self.per_second[int(time.time() - self.started)] += 1
            status = await self._attempt(identity, authorization, source, credential)
            self.statuses[status] += 1
            if self.args.mode == "spoof":
                self.by_credential[credential][status] += 1

    async def _attempt(
        self, identity: str, authorization: str | None, source: str, credential: str
    ) -> str:
        """One upgrade; returns the HTTP status ("101", "503", ...) or what went wrong."""
        stream = None
        try:
            with trio.fail_after(self.args.attempt_timeout):
                stream = await trio.open_tcp_stream(self.host, self.port, local_address=source)
                key = base64.b64encode(os.urandom(16)).decode()
                head = (
                    f"GET {self.path}/{identity} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6, ocpp2.0.1\r\n"
                )
                if authorization is not None:
                    head += f"Authorization: {authorization}\r\n"
                await stream.send_all((head + "\r\n").encode())
                received = b""
                while b"\r\n\r\n" not in received:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    received += chunk
                    if len(received) > 65536:
                        break
                line = received.split(b"\r\n", 1)[0].split()
                status = line[1].decode() if len(line) >= 2 else "no answer"
                if status == "101":
                    head_bytes, _, rest = received.partition(b"\r\n\r\n")
                    fields = dict(h.partition(b":")[::2] for h in head_bytes.split(b"\r\n")[1:])
                    fields = {name.strip().lower(): value.strip() for name, value in fields.items()}
                    chosen = fields.get(b"sec-websocket-protocol", b"").decode() or None
                    entry: dict[str, Any] = {
                        "identity": identity,
                        "credential": credential,
                        "subprotocol": chosen,
                        "epoch": time.time(),
                        "answers": {},
                    }
                    self.admitted.append(entry)
                    if self.args.mode == "spoof":
                        await self._act(stream, rest, chosen, entry)
                    return status
            # A refusal: the proxy closes after its answer. Waiting for that EOF before closing leaves
            # the TIME_WAIT on the server's side, so one source address is not out of ports in a minute.
            with trio.move_on_after(2.0):
                while await stream.receive_some(4096):
                    pass
            return status
        except trio.TooSlowError:
            self.errors["attempt timeout"] += 1
            return "timeout"
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            websocket.ProtocolError,
        ) as exc:
            self.errors[f"{type(exc).__name__}: {exc}"[:60]] += 1
            return "error"
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def _act(
        self, stream: trio.abc.Stream, pending: bytes, subprotocol: str | None, entry: dict
    ) -> None:
        """Admitted: send a marked BootNotification, StartTransaction and StopTransaction."""
        reader = websocket.FrameReader(from_client=False)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if subprotocol == "ocpp2.0.1":
            calls: list[tuple[str, dict[str, Any]]] = [
                (
                    "BootNotification",
                    {
                        "reason": "PowerUp",
                        "chargingStation": {"vendorName": MARKER, "model": MARKER},
                    },
                ),
                (
                    "TransactionEvent",
                    {
                        "eventType": "Started",
                        "timestamp": now,
                        "triggerReason": "Authorized",
                        "seqNo": 0,
                        "transactionInfo": {"transactionId": MARKER},
                        "idToken": {"idToken": MARKER, "type": "ISO14443"},
                        "meterValue": [
                            {
                                "timestamp": now,
                                "sampledValue": [
                                    {
                                        "value": MARKER_METER,
                                        "measurand": "Energy.Active.Import.Register",
                                    }
                                ],
                            }
                        ],
                    },
                ),
                (
                    "TransactionEvent",
                    {
                        "eventType": "Ended",
                        "timestamp": now,
                        "triggerReason": "EVDeparted",
                        "seqNo": 1,
                        "transactionInfo": {"transactionId": MARKER},
                    },
                ),
            ]
        else:
            calls = [
                ("BootNotification", {"chargePointVendor": MARKER, "chargePointModel": MARKER}),
                (
                    "StartTransaction",
                    {
                        "connectorId": 1,
                        "idTag": MARKER,
                        "meterStart": MARKER_METER,
                        "timestamp": now,
                    },
                ),
                (
                    "StopTransaction",
                    {"transactionId": 0, "meterStop": MARKER_METER + 1000, "timestamp": now},
                ),
            ]
        for number, (action, payload) in enumerate(calls):
            if action == "StopTransaction":
                started = entry["answers"].get("StartTransaction")
                payload["transactionId"] = (
                    started.get("transactionId", 0) if isinstance(started, dict) else 0
                )
            uid = f"attack-{number}"
            await stream.send_all(
                websocket.encode_frame(
                    websocket.TEXT, orjson.dumps([2, uid, action, payload]), mask=True
                )
            )
            answer = None
            while answer is None:
                data = pending or await stream.receive_some(65536)
                pending = b""
                if not data:
                    entry["answers"][action] = "connection closed"
                    return
                for message in reader.feed(data):
                    if message.opcode == websocket.TEXT and message.unique_id == uid:
                        answer = orjson.loads(message.data)
                    elif message.opcode == websocket.CLOSE:
                        entry["answers"][action] = "close frame"
                        return
            entry["answers"][action] = answer[2] if answer[0] == websocket.CALLRESULT else answer

    def summary(self) -> dict[str, Any]:
        seconds = max(self.per_second) + 1 if self.per_second else 0
        return {
            "mode": self.args.mode,
            "clients": self.args.clients,
            "sources": self.args.sources,
            "identities": len(self.identities),
            "started": self.started,
            "ended": time.time(),
            "stopped_by_signal": self.stopped_by_signal,
            "attempts": self.attempts,
            "statuses": dict(self.statuses),
            "by_credential": {kind: dict(c) for kind, c in self.by_credential.items() if c},
            "per_second": [self.per_second.get(s, 0) for s in range(seconds)],
            "admitted": self.admitted,
            "errors": dict(self.errors),
        }


def _sources(text: str) -> list[str]:
    """`127.0.0.9` or `127.1.0.1+100` (100 consecutive addresses), comma-separated; loopback only."""
    found: list[str] = []
    for part in text.split(","):
        first, _, count = part.strip().partition("+")
        start = ipaddress.ip_address(first)
        for k in range(int(count or 1)):
            address = start + k
            if address not in ipaddress.ip_network("127.0.0.0/8"):
                raise ValueError(f"source {address} is not a loopback address")
            found.append(str(address))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load.fault_clients", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", required=True, help="endpoint; clients upgrade <url>/<identity>")
    parser.add_argument("--mode", choices=("spoof", "flood"), required=True)
    parser.add_argument(
        "--identities", required=True, help="file with the identities to try, one a line"
    )
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients")
    parser.add_argument(
        "--sources",
        default="127.0.0.9",
        help="source addresses, comma-separated; A+N means N consecutive addresses from A",
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="start no attempt after this long"
    )
    parser.add_argument("--attempt-timeout", type=float, default=15.0, help="bound on one attempt")
    args = parser.parse_args(argv)
    try:
        args.sources = _sources(args.sources)
        loopback_target(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    with open(args.identities) as lines:
        identities = [line.strip() for line in lines if line.strip()]
    if not identities or args.clients < 1 or not args.seconds > 0:
        parser.error("need identities, --clients >= 1 and --seconds > 0")
    clients = Clients(args, identities)
    try:
        trio.run(clients.run)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.stdout.write(json.dumps(clients.summary()) + "\n")


if __name__ == "__main__":
    main()
