"""Open-loop partner API clients: keep-alive HTTP/1.1 connections listing sessions at a fixed
total rate, in processes of their own.

Each client is one connection to the API on 127.0.0.1 with one partner's key (clients take the
partners in turn). The offered rate R is spread evenly: client c (of C) sends at
`start + c/R + k*C/R`, whatever happened before. HTTP/1.1 without pipelining allows one request
in flight per connection: a request due while the previous one is unanswered is counted `late`,
sent the moment the answer is in, and its latency is counted from its due time, as every
latency is (no coordinated omission: a slow API cannot slow the schedule down and hide its
slowness). After the window no request is sent (the backlog is `unsent`); answers still missing
`drain` seconds later are counted `unanswered`.

Every request is `GET /v1/sessions`, of a kind drawn per request with the `mix` weights:

| kind | query |
| --- | --- |
| `first` | no filter: the partner's newest page |
| `next` | the next page of the client's previous list (its query and `next_cursor`); `first` when it had none |
| `customer` | `customer=` one of the partner's customers |
| `charger` | `charger=` one of the chargers linked to the partner's customers |
| `period` | `from=`/`to=`: a month (January to November) or a quarter of 2026, Dutch time |
| `status` | `status=completed` or `status=active` |

A worker process reads its `ClientsConfig` (with the partners' keys and ids) from a JSON file and
talks JSON lines over stdin/stdout: worker → `{"event": "ready", ...}` once its connections are
open; parent → `{"start": <epoch>}`; worker → `{"event": "result", ...}`. Workers stop by
themselves (600 s without a start, or the end of the schedule) and die with the parent.

    python -m bench.load.api_clients --worker CONFIG.json INDEX     (started by `ApiClients`)
"""

from __future__ import annotations

import gc
import ipaddress
import json
import math
import queue
import random
import resource
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import h11
import trio

from bench.harness.processes import spawn
from proxy.ere.core.quarters import DUTCH_TIME

KINDS = ("first", "next", "customer", "charger", "period", "status")
DEFAULT_MIX = {
    "first": 25.0,
    "next": 25.0,
    "customer": 15.0,
    "charger": 15.0,
    "period": 10.0,
    "status": 10.0,
}


@dataclass
class ClientsConfig:
    """What to offer and to whom; `partners`: partner id → {"keys", "customers", "chargers"}."""

    port: int
    partners: dict[str, dict[str, list[str]]]
    host: str = "127.0.0.1"
    clients: int = 200
    rate: float = 500.0
    warmup: float = 5.0
    duration: float = 30.0
    drain: float = 5.0
    procs: int = 1
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 1
    connect_timeout: float = 15.0


def parse_mix(text: str) -> dict[str, float]:
    """`first=25,next=25,...` → weights (kinds left out weigh 0); ValueError if malformed."""
    mix = dict.fromkeys(KINDS, 0.0)
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind.strip() not in mix or not weight:
            raise ValueError(
                f"--mix: {part!r} is not KIND=WEIGHT with KIND one of {', '.join(KINDS)}"
            )
        mix[kind.strip()] = float(weight)
    if sum(mix.values()) <= 0 or min(mix.values()) < 0:
        raise ValueError("--mix: the weights must be non-negative and not all 0")
    return mix


def _periods() -> list[str]:
    """The `from=..&to=..` queries of every month to November and every quarter of 2026."""

    def at(month: int, year: int = 2026) -> str:
        return quote(datetime(year, month, 1, tzinfo=DUTCH_TIME).isoformat(), safe="")

    months = [(m, m + 1) for m in range(1, 12)]
    quarters = [(m, m + 3) for m in (1, 4, 7, 10)]
    return [
        f"from={at(a)}&to={at(b) if b <= 12 else at(1, 2027)}"
        for a, b in months + quarters * 3  # as many quarters as months, about
    ]


# ---------------------------------------------------------------- worker (one process, Trio)


class _Closed(Exception):
    """The connection ended or broke; `kind` names how (for the error table)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(slots=True)
class _Client:
    index: int
    partner: dict[str, list[str]]
    headers: list[tuple[str, str]]
    rng: random.Random
    stream: trio.SocketStream | None = None
    conn: h11.Connection | None = None
    outstanding: bool = False
    list_query: str | None = None  # the query of the previous list, for `next`
    cursor: str | None = None


@dataclass
class WorkerResult:
    """One worker's counts over the window (latencies in µs from the due time, per kind)."""

    connected: int = 0
    connect_failed: int = 0
    answered: int = 0  # 200s received in the window
    late: int = 0
    unsent: int = 0
    unanswered: int = 0  # still in flight `drain` seconds after the window
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies_us: dict[str, list[int]] = field(default_factory=dict)
    send_lag_us: list[int] = field(default_factory=list)
    bytes_received: int = 0  # over the whole run, warm-up included
    responses: int = 0  # likewise
    cpu_s: float = 0.0
    wall_s: float = 0.0


class Worker:
    """Runs the clients `proc_index, proc_index + procs, ...` of a `ClientsConfig`."""

    def __init__(self, config: ClientsConfig, proc_index: int) -> None:
        if ipaddress.ip_address(config.host) not in ipaddress.ip_network("127.0.0.0/8"):
            raise ValueError(
                f"load is only generated against loopback addresses, not {config.host}"
            )
        self.config = config
        partners = sorted(config.partners)
        self.clients = [
            self._client(index, partners[index % len(partners)])
            for index in range(proc_index, config.clients, config.procs)
        ]
        self.kinds = [k for k in KINDS if config.mix.get(k, 0) > 0]
        self.weights = [config.mix[k] for k in self.kinds]
        self.periods = _periods()
        self.result = WorkerResult()
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.latencies: defaultdict[str, list[int]] = defaultdict(list)

    def _client(self, index: int, partner_id: str) -> _Client:
        partner = self.config.partners[partner_id]
        key = partner["keys"][(index // len(self.config.partners)) % len(partner["keys"])]
        headers = [
            ("host", f"{self.config.host}:{self.config.port}"),
            ("authorization", f"Bearer {key}"),
            ("accept", "application/json"),
        ]
        return _Client(index, partner, headers, random.Random(self.config.seed * 100_003 + index))

    async def connect_all(self) -> None:
        """Open every client's connection, 50 at a time."""
        limiter = trio.CapacityLimiter(50)

        async def one(client: _Client) -> None:
            async with limiter:
                try:
                    with trio.fail_after(self.config.connect_timeout):
                        await self._connect(client)
                    self.result.connected += 1
                except (OSError, trio.TooSlowError) as exc:
                    self.result.connect_failed += 1
                    self.errors[f"connect: {exc}"[:80]] += 1

        async with trio.open_nursery() as nursery:
            for client in self.clients:
                nursery.start_soon(one, client)

    async def _connect(self, client: _Client) -> None:
        client.stream = await trio.open_tcp_stream(self.config.host, self.config.port)
        client.conn = h11.Connection(h11.CLIENT)

    async def _drop(self, client: _Client) -> None:
        if client.stream is not None:
            await trio.aclose_forcefully(client.stream)
        client.stream = client.conn = None

    def _request(self, client: _Client) -> tuple[str, str]:
        """(kind, target) of the client's next request."""
        rng, partner = client.rng, client.partner
        kind = rng.choices(self.kinds, self.weights)[0]
        if kind == "next" and client.cursor is None:
            kind = "first"
        if kind == "next":
            query = "&".join(filter(None, (client.list_query, f"cursor={client.cursor}")))
            return kind, f"/v1/sessions?{query}"
        if kind == "first":
            query = ""
        elif kind == "customer":
            query = f"customer={rng.choice(partner['customers'])}"
        elif kind == "charger":
            query = f"charger={quote(rng.choice(partner['chargers']), safe='')}"
        elif kind == "period":
            query = rng.choice(self.periods)
        else:
            query = f"status={rng.choice(('completed', 'active'))}"
        client.list_query = query
        return kind, "/v1/sessions" + (f"?{query}" if query else "")

    async def _exchange(self, client: _Client, target: str) -> tuple[int, bytes]:
        """Send one GET on the client's connection (opened again if it was closed) and read
        the whole answer: (status, body)."""
        if client.stream is None or client.conn is None:
            await self._connect(client)
        assert client.stream is not None and client.conn is not None
        conn, stream = client.conn, client.stream
        request = conn.send(h11.Request(method="GET", target=target, headers=client.headers))
        await stream.send_all((request or b"") + (conn.send(h11.EndOfMessage()) or b""))
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                raw = await stream.receive_some(65536)
                self.result.bytes_received += len(raw)
                conn.receive_data(raw)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed("closed by the server")
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            await self._drop(client)  # the server said `connection: close`: reopen next time
        else:
            conn.start_next_cycle()
        return status, b"".join(chunks)

    @staticmethod
    def _follow(client: _Client, body: bytes) -> None:
        """Keep the answer's `next_cursor` (the last member of a page) for a `next` request."""
        at = body.rfind(b'"next_cursor":')
        value = body[at + 14 :].strip().rstrip(b"}").strip() if at >= 0 else b"null"
        client.cursor = value.strip(b'"').decode() if value.startswith(b'"') else None

    async def run(self, start_epoch: float) -> None:
        """Send the schedule from `start_epoch` (wall clock), then wait `drain` for answers."""
        cfg = self.config
        t0 = trio.current_time() + (start_epoch - time.time())
        window = (t0 + cfg.warmup, t0 + cfg.warmup + cfg.duration)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sample, window)
            with trio.move_on_at(window[1] + cfg.drain):
                async with trio.open_nursery() as clients:
                    for client in self.clients:
                        clients.start_soon(self._drive, client, t0, window)
        self.result.unanswered = sum(c.outstanding for c in self.clients)
        for client in self.clients:
            await self._drop(client)
        self.result.errors = dict(self.errors)
        self.result.statuses = dict(self.statuses)
        self.result.latencies_us = dict(self.latencies)

    async def _sample(self, window: tuple[float, float]) -> None:
        """Own CPU over the window, to show when the clients themselves saturate."""
        await trio.sleep_until(window[0])
        cpu0, wall0 = _own_cpu(), time.perf_counter()
        await trio.sleep_until(window[1])
        self.result.cpu_s = _own_cpu() - cpu0
        self.result.wall_s = time.perf_counter() - wall0

    async def _drive(self, client: _Client, t0: float, window: tuple[float, float]) -> None:
        """One client: a request on schedule, one in flight at most, until the window ends."""
        rate, res = self.config.rate, self.result
        period = self.config.clients / rate
        start, end = window
        due = t0 + client.index / rate
        clock = trio.current_time
        while due < end:
            now = clock()
            late = now >= due
            if late and now >= end:
                res.unsent += due >= start  # the backlog of an overloaded API: never sent
                due += period
                continue
            if late:
                res.late += due >= start
            else:
                await trio.sleep_until(due)
            kind, target = self._request(client)
            counted = start <= due < end
            client.outstanding = True
            sent = clock()
            try:
                status, body = await self._exchange(client, target)
            except (_Closed, OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                client.outstanding = False
                if counted:
                    self.errors[exc.kind if isinstance(exc, _Closed) else type(exc).__name__] += 1
                await self._drop(client)
                due += period
                continue
            client.outstanding = False
            received = clock()
            res.responses += 1
            if counted:
                self.statuses[f"{kind} {status}"] += 1
                self.latencies[kind].append(int((received - due) * 1e6))
                res.send_lag_us.append(int((sent - due) * 1e6))
            res.answered += status == 200 and start <= received < end
            if status == 200:
                self._follow(client, body)
            else:
                client.cursor = None
            due += period


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _worker_main(config: ClientsConfig, proc_index: int) -> None:
    worker = Worker(config, proc_index)
    await worker.connect_all()
    gc.collect()
    gc.freeze()
    ready = {"connected": worker.result.connected, "failed": worker.result.connect_failed}
    print(json.dumps({"event": "ready", **ready}), flush=True)
    line = ""
    with trio.move_on_after(600):  # never linger if the parent is gone
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    if not line:
        return
    await worker.run(json.loads(line)["start"])
    print(json.dumps({"event": "result", **asdict(worker.result)}), flush=True)


# ---------------------------------------------------------------- parent (plain Python)


def rank_ms(ordered_us: list[int], p: float) -> float:
    """Nearest-rank percentile `p` of sorted µs values, in ms (NaN without values)."""
    if not ordered_us:
        return math.nan
    return (
        ordered_us[min(len(ordered_us) - 1, max(0, math.ceil(p / 100 * len(ordered_us)) - 1))]
        / 1000
    )


@dataclass
class ClientsResult:
    """All workers' results merged; latencies sorted, in µs."""

    config: ClientsConfig
    connected: int
    connect_failed: int
    answered: int
    late: int
    unsent: int
    unanswered: int
    statuses: dict[str, int]
    errors: dict[str, int]
    latencies_us: dict[str, list[int]]
    send_lag_us: list[int]
    bytes_received: int
    responses: int
    gen_cpu: list[float]  # per worker, share of one core

    @property
    def all_us(self) -> list[int]:
        return sorted(v for values in self.latencies_us.values() for v in values)

    @property
    def achieved_rate(self) -> float:
        return self.answered / self.config.duration

    @property
    def not_ok(self) -> dict[str, int]:
        """Answers other than 200, by kind and status."""
        return {k: n for k, n in self.statuses.items() if not k.endswith(" 200")}


class ApiClients:
    """Parent side: starts the workers, releases them at one start time, merges their results."""

    def __init__(self, config: ClientsConfig, scratch: Path) -> None:
        self.config = config
        path = scratch / "api-clients.json"
        path.write_text(json.dumps(asdict(config)))
        self.lines: queue.Queue[tuple[int, dict | None]] = queue.Queue()
        self.procs: list[subprocess.Popen] = []
        for index in range(config.procs):
            argv = [
                sys.executable,
                "-m",
                "bench.load.api_clients",
                "--worker",
                str(path),
                str(index),
            ]
            proc = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, args=(index, proc), daemon=True).start()
            self.procs.append(proc)

    def _read(self, index: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                self.lines.put((index, json.loads(line)))
        self.lines.put((index, None))

    def _gather(self, event: str, timeout: float) -> list[dict]:
        found: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(self.procs):
            try:
                index, message = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"api clients: no {event!r} from every worker in {timeout:.0f} s"
                ) from None
            if message is None:
                if index in found:
                    continue
                raise RuntimeError(f"api clients: worker {index} exited before {event!r}")
            if message.get("event") == event:
                found[index] = message
        return [found[i] for i in sorted(found)]

    def wait_ready(self, timeout: float = 60) -> tuple[int, int]:
        """Block until every worker has opened its connections: (connected, failed)."""
        ready = self._gather("ready", timeout)
        return sum(r["connected"] for r in ready), sum(r["failed"] for r in ready)

    def start(self, at_epoch: float) -> None:
        """Release every worker at wall-clock time `at_epoch`."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"start": at_epoch}) + "\n")
            proc.stdin.flush()

    def collect(self) -> ClientsResult:
        """Wait for the results (workers stop by themselves after warm-up, window and drain)."""
        c = self.config
        results = self._gather("result", c.warmup + c.duration + c.drain + 30)
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        latencies: defaultdict[str, list[int]] = defaultdict(list)
        for r in results:
            statuses.update(r["statuses"])
            errors.update(r["errors"])
            for kind, values in r["latencies_us"].items():
                latencies[kind].extend(values)
        return ClientsResult(
            config=c,
            connected=sum(r["connected"] for r in results),
            connect_failed=sum(r["connect_failed"] for r in results),
            answered=sum(r["answered"] for r in results),
            late=sum(r["late"] for r in results),
            unsent=sum(r["unsent"] for r in results),
            unanswered=sum(r["unanswered"] for r in results),
            statuses=dict(statuses),
            errors=dict(errors),
            latencies_us={k: sorted(v) for k, v in latencies.items()},
            send_lag_us=sorted(v for r in results for v in r["send_lag_us"]),
            bytes_received=sum(r["bytes_received"] for r in results),
            responses=sum(r["responses"] for r in results),
            gen_cpu=[r["cpu_s"] / r["wall_s"] if r["wall_s"] else math.nan for r in results],
        )

    def close(self) -> None:
        """Stop any worker still running."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["--worker"] or len(argv) != 3:
        sys.exit(
            "usage: python -m bench.load.api_clients --worker CONFIG.json INDEX (see the docstring)"
        )
    config = ClientsConfig(**json.loads(Path(argv[1]).read_text()))
    trio.run(_worker_main, config, int(argv[2]))


if __name__ == "__main__":
    main()
