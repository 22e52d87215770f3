"""Charger fleet simulator: N OCPP chargers in one process, each running charging sessions.

Every charger opens `<url>/<identity>` with its subprotocol (ocpp1.6 or ocpp2.0.1; `mixed` gives
even chargers 1.6 and odd ones 2.0.1), then sends BootNotification and StatusNotification and
runs sessions back to back:

- OCPP 1.6: StartTransaction (the transactionId comes from the answer), MeterValues every
  `--interval` seconds, StopTransaction;
- OCPP 2.0.1: TransactionEvent Started (station-chosen transactionId, seqNo from 0),
  TransactionEvent Updated every `--interval` seconds, TransactionEvent Ended. In 2.0.1 the
  periodic readings of a transaction travel in TransactionEvent Updated (MeterValues has no
  transactionId); Started and Ended carry the start and stop readings too.

Every reading is `Energy.Active.Import.Register` in Wh, an integer that only grows (each charger
draws a constant power of 3.7 to 22 kW). With `--heartbeat S` a Heartbeat goes out every S
seconds between the other CALLs. A charger has at most one CALL outstanding (the OCPP rule):
each charger is one sequential task.

Bounds: each charger runs `--sessions` sessions (0: no limit) and starts none after `--duration`
seconds (0: no limit) or once the process got SIGUSR1 (sessions under way end normally);
`--max-seconds` cancels everything that is still running. At the end a
JSON summary goes to stdout: per charger its transactions with the exact meter start, meter stop
and number of energy samples it sent, and CALL round-trip times (send → answer) as p50/p99/max
over the whole run and per second of send time; `--latency-file` also writes every CALL as a CSV
line `send_epoch,rtt_ms,action` for exact percentiles over any window. Progress lines (JSON) go
to stderr.

`--connect-log FILE` writes every (re)connection as a CSV line `identity,first_try_epoch,
connected_epoch,attempts,failures`: when the charger started trying, when its handshake succeeded
(empty if it never did before the run ended), how many handshakes it tried, and why the failed
ones failed (e.g. `HTTP 503 instead of 101:4;TooSlowError:1`), for time-to-connect figures.

`--sent-log` writes, per charger, the transaction CALLs it sent and got a CALLRESULT for, in
order, as JSON `{identity: [{"action": ..., "payload": ...}, ...]}`: OCPP 1.6 StartTransaction
(with `"transaction_id"`, the id from its answer), MeterValues and StopTransaction; OCPP 2.0.1
TransactionEvent. A CALL resent after a reconnect is one entry (it is the same CALL). Set
against what the back-office received (`testkit.ledger`), it shows every transaction message
arrived exactly once and in order.

Connection loss (a close frame, a reset, or no answer within `--call-timeout`): the charger
reconnects with a growing back-off and sends the unanswered CALL again, byte for byte (same
message id, same payload), as a real charger sends its queued transaction messages. Resending
MeterValues, StopTransaction or a TransactionEvent cannot duplicate anything: the frame is the
same, and a capture keyed on content stores it once. Resending a StartTransaction can: if the
first one reached the back-office and only its answer was lost, the back-office has opened a
transaction whose id the charger never learns, and the resend opens a second one. The first is
left without a stop (OCPP 1.6 has no way for the charger to refer to it); this happens with
real chargers too. Such resends are counted per charger (`unconfirmed_starts`), so a checker
knows how many extra sessions the back-office (and a capturing proxy) may have seen.

    python -m bench.load.simulator --url ws://127.0.0.1:9000/ocpp --chargers 200 --protocol mixed \
        --sessions 3 --samples 4 --interval 1 [--heartbeat 30] [--latency-file rtt.csv] [--sent-log sent.json]

Offline periods (`--offline-every S`, 0: none): like a charger whose network drops now and then,
each charger loses its connection at random moments, on average once every S seconds (the
first after a random share of S), without a close frame; it stays away for about
`--offline-for` seconds (0.5 to 1.5 times), then reconnects and sends what it would have sent
meanwhile. The periods are counted per charger (`offline_periods`), apart from `reconnects`
(connections lost against its will). The random draws are seeded by the charger's index, so a
run is repeatable.

`--ramp S` starts the chargers evenly over S seconds (a reconnect storm: all within a few
seconds); `--source-addresses N` connects charger i from 127.0.(1 + i mod N).1, so a fleet of
tens of thousands gets past the ~28,000 ephemeral ports of one source address. The "booted"
progress line carries the time the last charger's BootNotification was answered.

Only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import base64
import csv
import itertools
import json
import math
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

from bench.harness.percentiles import percentiles
from bench.load.loadgen import loopback_target
from testkit import websocket

PROTOCOLS = ("ocpp1.6", "ocpp2.0.1")
TRANSACTION_ACTIONS = frozenset(
    {"StartTransaction", "MeterValues", "StopTransaction", "TransactionEvent"}
)
ENERGY = "Energy.Active.Import.Register"


@dataclass
class SimConfig:
    """What the fleet does; see the module doc for the meaning of each bound."""

    url: str
    chargers: int = 200
    protocol: str = "ocpp1.6"  # ocpp1.6, ocpp2.0.1 or mixed
    sessions: int = 3
    samples: int = 4  # periodic readings per session
    interval: float = 1.0
    duration: float = 0.0
    max_seconds: float = 300.0
    heartbeat: float = 0.0
    call_timeout: float = 10.0
    connect_timeout: float = 10.0
    connect_concurrency: int = 64
    prefix: str = "SIM"
    latency_file: str | None = None
    sent_log: str | None = None  # JSON file of each charger's answered transaction CALLs
    ramp: float | None = None  # chargers start evenly over this many seconds (None: `interval`)
    source_addresses: int = 1  # connect from 127.0.<k>.1 for k in 1..n (past one address's ports)
    offline_every: float = 0.0  # mean seconds between a charger's offline periods (0: none)
    offline_for: float = 30.0  # mean length of an offline period
    password: str | None = (
        None  # HTTP Basic <identity>:<password> at every connect (None: no header)
    )
    connect_log: str | None = (
        None  # CSV of every (re)connection: first try, connected, attempts, failures
    )


@dataclass
class Connection:
    """One (re)connection of a charger: from its first handshake try until one succeeded."""

    identity: str
    first_try: float  # epoch
    connected: float | None = None  # epoch of the 101 (None: never, before the run ended)
    attempts: int = 0
    failures: Counter[str] = field(default_factory=Counter)


@dataclass
class Transaction:
    transaction_id: str
    meter_start: int
    meter_stop: int | None = None
    samples: int = 0  # energy readings sent in frames of this transaction


@dataclass
class ChargerReport:
    identity: str
    protocol: str
    transactions: list[Transaction] = field(default_factory=list)
    calls: int = 0
    resent: int = 0
    reconnects: int = 0
    offline_periods: int = 0
    unconfirmed_starts: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class _Dropped(Exception):
    """The connection is unusable (closed, reset, protocol error, or the answer is overdue)."""


class CallRejected(Exception):
    """The back-office answered a CALL with a CALLERROR."""


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class Latencies:
    """(send epoch, round trip, action) of every answered CALL."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, str]] = []

    def add(self, sent_epoch: float, rtt: float, action: str) -> None:
        self.rows.append((sent_epoch, rtt, action))

    def summary(self) -> dict[str, Any]:
        per_second: dict[int, list[float]] = defaultdict(list)
        for sent, rtt, _ in self.rows:
            per_second[int(sent)].append(rtt)
        return {
            "overall": percentiles([rtt for _, rtt, _ in self.rows]),
            "per_second": [{"second": s, **percentiles(v)} for s, v in sorted(per_second.items())],
        }

    def write_csv(self, path: str) -> None:
        with open(path, "w") as out:
            out.write("send_epoch,rtt_ms,action\n")
            for sent, rtt, action in self.rows:
                out.write(f"{sent:.6f},{rtt * 1000:.3f},{action}\n")


def read_latencies(path: Path) -> list[tuple[float, float]]:
    """(send epoch, round trip in seconds) of every CALL in a `--latency-file`."""
    with path.open() as f:
        return [
            (float(row["send_epoch"]), float(row["rtt_ms"]) / 1000) for row in csv.DictReader(f)
        ]


class Charger:
    """One simulated charger: its connection, its meter register and its CALLs."""

    def __init__(self, fleet: Fleet, index: int, protocol: str) -> None:
        self.fleet = fleet
        self.index = index
        self.report = ChargerReport(f"{fleet.config.prefix}{index:05d}", protocol)
        self.v16 = protocol == "ocpp1.6"
        self.register = 1_000_000 + 10_000 * index  # Wh, the meter's lifetime import
        self.power_w = 3_700 + (index * 997) % 18_300
        self._energy_carry = 0.0
        self._stream: trio.SocketStream | None = None
        self._reader: websocket.ReaderLike | None = None
        self._pending = b""
        self._ids = itertools.count(1)
        self._errors: Counter[str] = Counter()
        self._next_heartbeat = math.inf
        self.sent: list[dict[str, Any]] = []  # answered transaction CALLs, for the sent log
        spread = fleet.config.source_addresses
        self._source = None if spread <= 1 else f"127.0.{1 + index % spread}.1"
        self._random = random.Random(index)
        self._offline_at = math.inf  # set when the charger starts
        password = fleet.config.password
        self._authorization = (
            None
            if password is None
            else b"Basic " + base64.b64encode(f"{self.report.identity}:{password}".encode())
        )

    # -- connection ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        fleet = self.fleet
        target = f"{fleet.path}/{self.report.identity}"
        async with fleet.connect_limiter:
            stream = None
            try:
                with trio.fail_after(fleet.config.connect_timeout):
                    stream = await trio.open_tcp_stream(
                        fleet.host, fleet.port, local_address=self._source
                    )
                    chosen, pending = await websocket.client_handshake(
                        stream,
                        f"{fleet.host}:{fleet.port}",
                        target,
                        [self.report.protocol],
                        self._authorization,
                    )
            except BaseException:
                if stream is not None:
                    await trio.aclose_forcefully(stream)
                raise
        if chosen != self.report.protocol:
            await trio.aclose_forcefully(stream)
            raise websocket.HandshakeError(
                f"subprotocol {chosen!r} instead of {self.report.protocol}"
            )
        self._stream, self._reader, self._pending = (
            stream,
            websocket.FrameReader(from_client=False),
            pending,
        )

    async def _reconnect(self) -> None:
        """Connect, retrying with a growing back-off (the run's cancel scope bounds it)."""
        delay = 0.25
        record = Connection(self.report.identity, time.time())
        self.fleet.connections.append(record)
        while True:
            record.attempts += 1
            try:
                await self._connect()
                record.connected = time.time()
                return
            except (
                OSError,
                trio.BrokenResourceError,
                trio.TooSlowError,
                websocket.HandshakeError,
            ) as exc:
                self._errors[f"connect: {type(exc).__name__}"] += 1
                record.failures[
                    str(exc)[:40]
                    if isinstance(exc, websocket.HandshakeError)
                    else type(exc).__name__
                ] += 1
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def _go_offline_if_due(self) -> None:
        """An offline period when one is due: drop the connection, stay away, come back."""
        cfg = self.fleet.config
        if trio.current_time() < self._offline_at:
            return
        await self._drop()  # no close frame: the network went away
        self.report.offline_periods += 1
        await trio.sleep(cfg.offline_for * self._random.uniform(0.5, 1.5))
        await self._reconnect()
        self._offline_at = trio.current_time() + self._random.expovariate(1 / cfg.offline_every)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            with trio.move_on_after(1):
                await stream.send_all(websocket.close_frame(1000, mask=True))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    # -- CALLs --------------------------------------------------------------------------------

    async def call(self, action: str, payload: dict[str, Any]) -> Any:
        """Send a CALL and return the CALLRESULT payload; reconnect and resend until answered."""
        await self._go_offline_if_due()
        uid = f"{self.index:x}-{next(self._ids)}"
        text = orjson.dumps([2, uid, action, payload])
        first = True
        while True:
            if self._stream is None:
                self.report.reconnects += 1
                await self._reconnect()
            if not first:
                self.report.resent += 1
                if action == "StartTransaction":
                    self.report.unconfirmed_starts += 1
            first = False
            try:
                sent_epoch, started = time.time(), trio.current_time()
                await self._stream.send_all(websocket.encode_frame(websocket.TEXT, text, mask=True))  # type: ignore[union-attr]
                with trio.move_on_after(self.fleet.config.call_timeout) as timer:
                    kind, body = await self._answer(uid)
                if timer.cancelled_caught:
                    raise _Dropped("no answer in time")
            except (
                _Dropped,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                websocket.ProtocolError,
            ) as exc:
                self._errors[f"{action}: {str(exc) or type(exc).__name__}"[:80]] += 1
                await self._drop()
                continue
            self.report.calls += 1
            self.fleet.latencies.add(sent_epoch, trio.current_time() - started, action)
            if kind == websocket.CALLERROR:
                raise CallRejected(f"{action}: {body[2]}")
            if action in TRANSACTION_ACTIONS:
                entry = {"action": action, "payload": payload}
                if action == "StartTransaction":
                    entry["transaction_id"] = body[2].get("transactionId")
                self.sent.append(entry)
            return body[2]

    async def _answer(self, uid: str) -> tuple[int, list[Any]]:
        """Read until the answer to `uid`; answer pings and the back-office's own CALLs on the way."""
        stream, reader = self._stream, self._reader
        assert stream is not None and reader is not None
        while True:
            data = self._pending or await stream.receive_some(65536)
            self._pending = b""
            if not data:
                raise _Dropped("closed by peer")
            found = None
            for message in reader.feed(data):
                if message.opcode == websocket.TEXT:
                    if message.unique_id == uid and message.message_type in (
                        websocket.CALLRESULT,
                        websocket.CALLERROR,
                    ):
                        found = (message.message_type, orjson.loads(message.data))
                    elif message.message_type == websocket.CALL:
                        refusal: list[Any] = [4, message.unique_id, "NotImplemented", "", {}]
                        await stream.send_all(
                            websocket.encode_frame(websocket.TEXT, orjson.dumps(refusal), mask=True)
                        )
                    else:
                        self._errors["unexpected message"] += 1
                elif message.opcode == websocket.PING:
                    await stream.send_all(
                        websocket.encode_frame(websocket.PONG, message.data, mask=True)
                    )
                elif message.opcode == websocket.CLOSE:
                    raise _Dropped("close frame from peer")
            if found is not None:
                return found

    # -- behaviour ----------------------------------------------------------------------------

    def _advance(self, seconds: float) -> int:
        """Let the meter run for `seconds` at this charger's power; at least 1 Wh."""
        self._energy_carry += self.power_w * seconds / 3600
        step = max(1, int(self._energy_carry))
        self._energy_carry = max(0.0, self._energy_carry - step)
        self.register += step
        return self.register

    async def _wait(self, until: float) -> None:
        """Sleep until `until`, sending Heartbeats that fall due meanwhile."""
        while self._next_heartbeat < until:
            await trio.sleep_until(self._next_heartbeat)
            await self.call("Heartbeat", {})
            self._next_heartbeat = trio.current_time() + self.fleet.config.heartbeat
        await trio.sleep_until(until)

    def _sampled(self, value: int, context: str) -> dict[str, Any]:
        if self.v16:
            return {"value": str(value), "context": context, "measurand": ENERGY, "unit": "Wh"}
        return {
            "value": value,
            "context": context,
            "measurand": ENERGY,
            "unitOfMeasure": {"unit": "Wh"},
        }

    def _meter_value(self, value: int, context: str) -> list[dict[str, Any]]:
        return [{"timestamp": _timestamp(), "sampledValue": [self._sampled(value, context)]}]

    async def run(self, t0: float) -> None:
        cfg = self.fleet.config
        try:
            ramp = cfg.interval if cfg.ramp is None else cfg.ramp
            await trio.sleep_until(t0 + ramp * self.index / cfg.chargers)  # spread the fleet
            await self._reconnect()
            if self.v16:
                await self.call(
                    "BootNotification",
                    {
                        "chargePointVendor": "Bench",
                        "chargePointModel": "Sim16",
                        "chargePointSerialNumber": self.report.identity,
                    },
                )
                await self.call(
                    "StatusNotification",
                    {
                        "connectorId": 1,
                        "status": "Available",
                        "errorCode": "NoError",
                        "timestamp": _timestamp(),
                    },
                )
            else:
                await self.call(
                    "BootNotification",
                    {
                        "reason": "PowerUp",
                        "chargingStation": {
                            "vendorName": "Bench",
                            "model": "Sim201",
                            "serialNumber": self.report.identity,
                        },
                    },
                )
                await self.call(
                    "StatusNotification",
                    {
                        "timestamp": _timestamp(),
                        "connectorStatus": "Available",
                        "evseId": 1,
                        "connectorId": 1,
                    },
                )
            self.fleet.booted()
            if cfg.offline_every > 0:
                self._offline_at = trio.current_time() + self._random.uniform(0, cfg.offline_every)
            if cfg.heartbeat > 0:
                self._next_heartbeat = trio.current_time() + cfg.heartbeat
            for number in itertools.count(1):
                if cfg.sessions and number > cfg.sessions:
                    break
                if (
                    cfg.duration and trio.current_time() >= t0 + cfg.duration
                ) or self.fleet.finishing:
                    break
                await (self._session16() if self.v16 else self._session201(number))
                await self._wait(trio.current_time() + cfg.interval)
        except CallRejected as exc:
            self._errors[str(exc)[:80]] += 1
        finally:
            self.report.errors = dict(self._errors)
            with trio.CancelScope(shield=True):
                await self.close()

    async def _session16(self) -> None:
        interval = self.fleet.config.interval
        meter_start = self.register
        answer = await self.call(
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "SIMTAG",
                "meterStart": meter_start,
                "timestamp": _timestamp(),
            },
        )
        tx = Transaction(str(answer["transactionId"]), meter_start)
        self.report.transactions.append(tx)
        next_at = trio.current_time() + interval
        for _ in range(self.fleet.config.samples):
            await self._wait(next_at)
            next_at += interval
            value = self._advance(interval)
            await self.call(
                "MeterValues",
                {
                    "connectorId": 1,
                    "transactionId": answer["transactionId"],
                    "meterValue": self._meter_value(value, "Sample.Periodic"),
                },
            )
            tx.samples += 1
        await self._wait(next_at)
        meter_stop = self._advance(interval)
        await self.call(
            "StopTransaction",
            {
                "transactionId": answer["transactionId"],
                "meterStop": meter_stop,
                "timestamp": _timestamp(),
                "reason": "EVDisconnected",
            },
        )
        tx.meter_stop = meter_stop

    async def _session201(self, number: int) -> None:
        interval = self.fleet.config.interval
        tx = Transaction(f"{self.report.identity}-{number}", self.register)
        self.report.transactions.append(tx)
        seq = itertools.count()

        async def event(kind: str, trigger: str, value: int, context: str, **info: str) -> None:
            await self.call(
                "TransactionEvent",
                {
                    "eventType": kind,
                    "timestamp": _timestamp(),
                    "triggerReason": trigger,
                    "seqNo": next(seq),
                    "transactionInfo": {"transactionId": tx.transaction_id, **info},
                    "evse": {"id": 1, "connectorId": 1},
                    "meterValue": self._meter_value(value, context),
                    **(
                        {"idToken": {"idToken": "SIMTAG", "type": "ISO14443"}}
                        if kind == "Started"
                        else {}
                    ),
                },
            )
            tx.samples += 1

        await event(
            "Started", "Authorized", tx.meter_start, "Transaction.Begin", chargingState="Charging"
        )
        next_at = trio.current_time() + interval
        for _ in range(self.fleet.config.samples):
            await self._wait(next_at)
            next_at += interval
            await event("Updated", "MeterValuePeriodic", self._advance(interval), "Sample.Periodic")
        await self._wait(next_at)
        meter_stop = self._advance(interval)
        await event(
            "Ended",
            "EVCommunicationLost",
            meter_stop,
            "Transaction.End",
            stoppedReason="EVDisconnected",
        )
        tx.meter_stop = meter_stop


class Fleet:
    """All chargers of one process."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.host, self.port, self.path = loopback_target(config.url)
        self.connect_limiter = trio.CapacityLimiter(config.connect_concurrency)
        self.latencies = Latencies()
        self.connections: list[Connection] = []
        protocols = PROTOCOLS if config.protocol == "mixed" else (config.protocol,)
        self.chargers = [
            Charger(self, i, protocols[i % len(protocols)]) for i in range(config.chargers)
        ]
        self._booted = 0
        self.timed_out = False
        self.finishing = False  # SIGUSR1: start no more sessions (as when --duration is reached)

    def booted(self) -> None:
        self._booted += 1
        if self._booted == len(self.chargers):
            _progress(event="booted", chargers=self._booted, epoch=time.time())

    async def run(self) -> None:
        t0 = trio.current_time()
        _progress(event="started", chargers=len(self.chargers), epoch=time.time())
        with trio.move_on_after(self.config.max_seconds) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._finish_on_signal)
                async with trio.open_nursery() as fleet:
                    for charger in self.chargers:
                        fleet.start_soon(charger.run, t0)
                nursery.cancel_scope.cancel()
        self.timed_out = scope.cancelled_caught
        _progress(event="finished", epoch=time.time(), timed_out=self.timed_out)

    async def _finish_on_signal(self) -> None:
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            async for _ in signals:
                self.finishing = True
                _progress(event="finishing")

    def sent_log(self) -> dict[str, list[dict[str, Any]]]:
        """Per identity, the transaction CALLs the charger sent and got answered, in order."""
        return {charger.report.identity: charger.sent for charger in self.chargers}

    def summary(self) -> dict[str, Any]:
        reports = [asdict(c.report) for c in self.chargers]
        errors: Counter[str] = Counter()
        for report in reports:
            errors.update(report["errors"])
        return {
            "config": asdict(self.config),
            "codec": websocket.CODEC,
            "timed_out": self.timed_out,
            "transactions": sum(len(r["transactions"]) for r in reports),
            "calls": sum(r["calls"] for r in reports),
            "resent": sum(r["resent"] for r in reports),
            "reconnects": sum(r["reconnects"] for r in reports),
            "offline_periods": sum(r["offline_periods"] for r in reports),
            "errors": dict(errors),
            "latency": self.latencies.summary(),
            "chargers": reports,
        }


def _progress(**fields: Any) -> None:
    print(json.dumps(fields), file=sys.stderr, flush=True)


async def simulate(config: SimConfig) -> dict[str, Any]:
    """Run the fleet to its end and return the summary (also writes `latency_file` and `sent_log` if set)."""
    fleet = Fleet(config)
    await fleet.run()
    if config.latency_file:
        fleet.latencies.write_csv(config.latency_file)
    if config.sent_log:
        with open(config.sent_log, "wb") as out:
            out.write(orjson.dumps(fleet.sent_log()))
    if config.connect_log:
        with open(config.connect_log, "w") as out:
            out.write("identity,first_try_epoch,connected_epoch,attempts,failures\n")
            for c in fleet.connections:
                failures = ";".join(f"{why.replace(',', ' ')}:{n}" for why, n in c.failures.items())
                connected = "" if c.connected is None else f"{c.connected:.6f}"
                out.write(f"{c.identity},{c.first_try:.6f},{connected},{c.attempts},{failures}\n")
    return fleet.summary()


def main(argv: list[str] | None = None) -> None:
    d = SimConfig(url="")
    parser = argparse.ArgumentParser(
        prog="python -m bench.load.simulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--url", required=True, help="endpoint; chargers connect to <url>/<identity>"
    )
    parser.add_argument("--chargers", type=int, default=d.chargers)
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "mixed"), default=d.protocol)
    parser.add_argument(
        "--sessions", type=int, default=d.sessions, help="sessions per charger (0: no limit)"
    )
    parser.add_argument(
        "--samples", type=int, default=d.samples, help="periodic meter readings per session"
    )
    parser.add_argument(
        "--interval", type=float, default=d.interval, help="seconds between meter readings"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=d.duration,
        help="start no session after this (0: no limit)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=d.max_seconds, help="hard bound on the whole run"
    )
    parser.add_argument(
        "--heartbeat", type=float, default=d.heartbeat, help="Heartbeat period (0: none)"
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=d.call_timeout,
        help="reconnect when an answer is this late",
    )
    parser.add_argument("--connect-concurrency", type=int, default=d.connect_concurrency)
    parser.add_argument(
        "--prefix", default=d.prefix, help="identity prefix (identities are <prefix><index:05d>)"
    )
    parser.add_argument("--latency-file", help="write every CALL as send_epoch,rtt_ms,action")
    parser.add_argument(
        "--sent-log", help="write each charger's answered transaction CALLs as JSON"
    )
    parser.add_argument(
        "--connect-log",
        help="write every (re)connection as identity,first_try_epoch,"
        "connected_epoch,attempts,failures",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        help="start the chargers evenly over this many seconds (default: --interval)",
    )
    parser.add_argument(
        "--source-addresses",
        type=int,
        default=d.source_addresses,
        help="connect from 127.0.k.1, k = 1..N, to get past one address's ephemeral ports",
    )
    parser.add_argument(
        "--offline-every",
        type=float,
        default=d.offline_every,
        help="mean seconds between a charger's offline periods (0: none)",
    )
    parser.add_argument(
        "--offline-for", type=float, default=d.offline_for, help="mean length of an offline period"
    )
    parser.add_argument(
        "--password", help="send HTTP Basic <identity>:<password> (what proves a charger offline)"
    )
    args = parser.parse_args(argv)
    if args.chargers < 1 or args.interval <= 0 or args.max_seconds <= 0:
        parser.error("need --chargers >= 1, --interval > 0 and --max-seconds > 0")
    if not 1 <= args.source_addresses <= 254 or (args.ramp is not None and args.ramp < 0):
        parser.error("need 1 <= --source-addresses <= 254 and --ramp >= 0")
    if args.offline_every < 0 or args.offline_for < 0:
        parser.error("need --offline-every >= 0 and --offline-for >= 0")
    if not args.sessions and not args.duration:
        parser.error("give --sessions or --duration (or both) so the run ends by itself")
    config = SimConfig(**vars(args))
    try:
        loopback_target(config.url)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        summary = trio.run(simulate, config)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
