"""Open-loop OCPP 1.6 load generator: N simulated chargers sending MeterValues CALLs.

Each charger is one WebSocket connection to `<url>/<identity>` (subprotocol ocpp1.6). The total
offered rate R is spread evenly: charger g (of N) sends at `start + g/R + k*N/R`, whatever
happened before (open-loop). OCPP allows one outstanding CALL per charger: when the previous CALL
is still unanswered at the next due time, that CALL is counted as `late`, sent as soon as the
answer arrives, and its latency is measured from its *due* time, so a slow target cannot hide its
latency by holding the generator back (coordinated omission). A CALL sent on time is measured
from its send (send → CALLRESULT received). No CALL is sent after the window ends: the backlog of
an overloaded target is reported as `unsent`, and answers still missing `drain` seconds after the
window are errors.

Only frames of the steady window (after the warm-up) are counted. Sockets are raw Trio streams
and frames go through the project codec, so a generator process stays light; `--procs` spreads
the chargers over several processes, and each reports its own CPU so saturation is visible.

    python -m bench.load.loadgen --url ws://127.0.0.1:9000/ocpp --chargers 1000 --rate 2000 \
        --warmup 5 --duration 30 [--procs 2]

Internally the parent starts `--procs` worker processes that talk JSON lines over stdin/stdout:
worker → `{"event": "ready", ...}`; parent → `{"start": <epoch>}`; worker → `{"event": "result", ...}`.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import math
import queue
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import trio

from bench.harness.processes import spawn
from testkit import websocket

SUBPROTOCOL = "ocpp1.6"

# A 1.6 MeterValues CALL of about 260 bytes (36-character id, like the UUIDs chargers use).
_METER_VALUES = (
    '[2,"%08x-%04x-4000-8000-%012x","MeterValues",{"connectorId":1,"transactionId":%d,'
    '"meterValue":[{"timestamp":"%s","sampledValue":[{"value":"%d","context":"Sample.Periodic",'
    '"measurand":"Energy.Active.Import.Register","unit":"Wh"}]}]}]'
)


@dataclass
class LoadConfig:
    """What to offer and for how long; shared by the parent and its workers."""

    url: str
    chargers: int = 1000
    rate: float = 2000.0
    warmup: float = 5.0
    duration: float = 30.0
    drain: float = 5.0
    procs: int = 1
    connect_concurrency: int = 64
    connect_timeout: float = 15.0
    identity_prefix: str = "CP"


@dataclass
class WorkerResult:
    """Counts of one worker over the steady window (latencies in µs, unsorted)."""

    connected: int = 0
    connect_failed: int = 0
    answers: int = 0
    frames: int = 0
    late: int = 0
    unsent: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_us: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_kb: int = 0


def loopback_target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a ws:// URL; refuses anything outside 127.0.0.0/8."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"need a ws:// URL, got {url!r}")
    address = socket.gethostbyname(parts.hostname)
    if ipaddress.ip_address(address) not in ipaddress.ip_network("127.0.0.0/8"):
        raise ValueError(f"load is only generated against loopback addresses, not {address}")
    return address, parts.port or 80, parts.path.rstrip("/")


# ---------------------------------------------------------------- worker (one process, Trio)


class _Closed(Exception):
    """The connection ended; `kind` says how (for the error table)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(slots=True)
class _Charger:
    index: int
    stream: trio.SocketStream
    reader: websocket.ReaderLike
    pending: bytes
    outstanding: bool = False


class Worker:
    """Runs the chargers `proc_index, proc_index + procs, ...` of a `LoadConfig`."""

    def __init__(self, config: LoadConfig, proc_index: int) -> None:
        self.config = config
        self.host, self.port, self.path = loopback_target(config.url)
        self.indices = range(proc_index, config.chargers, config.procs)
        self.chargers: list[_Charger] = []
        self.result = WorkerResult()
        self.errors: Counter[str] = Counter()

    async def connect_all(self) -> None:
        """Open and upgrade every connection, `connect_concurrency` at a time."""
        limiter = trio.CapacityLimiter(self.config.connect_concurrency)
        async with trio.open_nursery() as nursery:
            for index in self.indices:
                nursery.start_soon(self._connect, index, limiter)
        self.chargers.sort(key=lambda c: c.index)
        self.result.connected = len(self.chargers)

    async def _connect(self, index: int, limiter: trio.CapacityLimiter) -> None:
        identity = f"{self.config.identity_prefix}{index:06d}"
        async with limiter:
            stream = None
            try:
                with trio.fail_after(self.config.connect_timeout):
                    stream = await trio.open_tcp_stream(self.host, self.port)
                    target = f"{self.path}/{identity}"
                    _, pending = await websocket.client_handshake(
                        stream, f"{self.host}:{self.port}", target, [SUBPROTOCOL]
                    )
            except (
                OSError,
                trio.BrokenResourceError,
                trio.TooSlowError,
                websocket.HandshakeError,
            ) as exc:
                self.result.connect_failed += 1
                self.errors[f"connect: {exc}"[:80]] += 1
                if stream is not None:
                    await trio.aclose_forcefully(stream)
                return
        self.chargers.append(
            _Charger(index, stream, websocket.FrameReader(from_client=False), pending)
        )

    async def run(self, start_epoch: float) -> None:
        """Send the schedule from `start_epoch` (wall clock), then wait `drain` for late answers."""
        cfg = self.config
        t0 = trio.current_time() + (start_epoch - time.time())
        window = (t0 + cfg.warmup, t0 + cfg.warmup + cfg.duration)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sample, window)
            with trio.move_on_at(window[1] + cfg.drain):
                async with trio.open_nursery() as chargers:
                    for charger in self.chargers:
                        chargers.start_soon(self._drive, charger, t0, window)
        if timed_out := sum(c.outstanding for c in self.chargers):
            self.errors["unanswered at the cutoff"] += timed_out
        with trio.move_on_after(2):
            async with trio.open_nursery() as nursery:
                for charger in self.chargers:
                    nursery.start_soon(self._close, charger)
        self.result.errors = dict(self.errors)

    async def _sample(self, window: tuple[float, float]) -> None:
        """Own CPU over the steady window, to show when the generator itself saturates."""
        await trio.sleep_until(window[0])
        cpu0, wall0 = _own_cpu(), time.perf_counter()
        await trio.sleep_until(window[1])
        self.result.cpu_s = _own_cpu() - cpu0
        self.result.wall_s = time.perf_counter() - wall0
        self.result.rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def _drive(self, charger: _Charger, t0: float, window: tuple[float, float]) -> None:
        """One charger: send on schedule, one CALL outstanding at most, until the window ends."""
        rate, res = self.config.rate, self.result
        period = self.config.chargers / rate
        start, end = window
        due = t0 + charger.index / rate
        clock, encode, text = trio.current_time, websocket.encode_frame, websocket.TEXT
        k = 0
        try:
            while due < end:
                now = clock()
                late = now >= due
                if late and now >= end:
                    # Backlog of an overloaded target at the end of the window: not sent at all.
                    res.unsent += due >= start
                    due += period
                    continue
                if late:
                    res.late += due >= start
                else:
                    await trio.sleep_until(due)
                k += 1
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                call = _METER_VALUES % (
                    charger.index,
                    k & 0xFFFF,
                    k,
                    1000 + charger.index,
                    stamp,
                    10 * k,
                )
                frame = encode(text, call.encode(), mask=True)
                charger.outstanding = True
                sent_at = clock()
                await charger.stream.send_all(frame)
                await self._await_answer(charger, call[4:40])  # the unique id
                charger.outstanding = False
                received = clock()
                res.frames += (start <= sent_at < end) + (start <= received < end)
                res.answers += start <= received < end
                if start <= due < end:  # late: from the due time; on time: from the send
                    res.latencies_us.append(int((received - (due if late else sent_at)) * 1e6))
                due += period
        except _Closed as exc:
            charger.outstanding = False
            self.errors[exc.kind] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            charger.outstanding = False
            self.errors["connection reset"] += 1
        except websocket.ProtocolError as exc:
            charger.outstanding = False
            self.errors[f"protocol: {exc}"] += 1

    async def _await_answer(self, charger: _Charger, uid: str) -> None:
        """Read until the CALLRESULT (or CALLERROR) for `uid`; answer pings on the way."""
        while True:
            data = charger.pending or await charger.stream.receive_some(65536)
            charger.pending = b""
            if not data:
                raise _Closed("closed by peer")
            answered = False
            for message in charger.reader.feed(data):
                if message.opcode == websocket.TEXT:
                    if message.unique_id == uid and message.message_type == websocket.CALLRESULT:
                        answered = True
                    elif message.unique_id == uid and message.message_type == websocket.CALLERROR:
                        self.errors["CALLERROR"] += 1
                        answered = True
                    else:
                        self.errors["unexpected message"] += 1
                elif message.opcode == websocket.PING:
                    await charger.stream.send_all(
                        websocket.encode_frame(websocket.PONG, message.data, mask=True)
                    )
                elif message.opcode == websocket.CLOSE:
                    raise _Closed("close frame from peer")
            if answered:
                return

    async def _close(self, charger: _Charger) -> None:
        try:
            await charger.stream.send_all(websocket.close_frame(1000, mask=True))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await charger.stream.aclose()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _worker_main(config: LoadConfig, proc_index: int) -> None:
    worker = Worker(config, proc_index)
    await worker.connect_all()
    gc.collect()
    gc.freeze()  # connections live all run: keep them out of the collector's full passes
    print(
        json.dumps(
            {
                "event": "ready",
                "connected": worker.result.connected,
                "failed": worker.result.connect_failed,
            }
        ),
        flush=True,
    )
    line = ""
    with trio.move_on_after(600):  # never linger if the parent is gone
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    if not line:
        return
    await worker.run(json.loads(line)["start"])
    print(json.dumps({"event": "result", **asdict(worker.result)}), flush=True)


# ---------------------------------------------------------------- parent (plain Python)


@dataclass
class LoadResult:
    """The merged result of all workers over the steady window."""

    config: LoadConfig
    connected: int
    connect_failed: int
    answers: int
    frames: int
    late: int
    unsent: int
    errors: dict[str, int]
    latencies_us: list[int]  # sorted
    gen_cpu: list[float]  # per worker, fraction of one core
    gen_rss_kb: list[int]

    @property
    def achieved_rate(self) -> float:
        return self.answers / self.config.duration

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile_ms(self, p: float) -> float:
        """Nearest-rank percentile of the latency in ms (NaN when nothing was measured)."""
        values = self.latencies_us
        if not values:
            return math.nan
        return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))] / 1000

    def summary(self) -> str:
        pct = "  ".join(f"p{p:g} {self.percentile_ms(p):.2f}" for p in (50, 90, 99, 99.9))
        cpu = ", ".join(f"{c:.0%}" for c in self.gen_cpu)
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"chargers {self.connected} connected, {self.connect_failed} failed\n"
            f"rate     {self.achieved_rate:.0f}/s achieved of {self.config.rate:g}/s offered "
            f"({len(self.latencies_us)} CALLs answered of those due in {self.config.duration:g} s, "
            f"{self.late} late, {self.unsent} never sent)\n"
            f"latency  ms: {pct}  max {self.percentile_ms(100):.2f}\n"
            f"errors   {errors}\n"
            f"gen CPU  {cpu} of a core per process ({websocket.CODEC})"
        )


class LoadGen:
    """Parent side: starts the workers, releases them at one start time, merges their results."""

    def __init__(self, config: LoadConfig, cwd: str | None = None) -> None:
        loopback_target(config.url)
        self.config = config
        self.lines: queue.Queue[tuple[int, dict | None]] = queue.Queue()
        self.procs = []
        for index in range(config.procs):
            argv = [
                sys.executable,
                "-m",
                "bench.load.loadgen",
                "--worker",
                json.dumps(asdict(config)),
                str(index),
            ]
            proc = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd)
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
                    f"load generator: no {event!r} from all workers in {timeout:.0f} s"
                ) from None
            if message is None:
                if index in found:
                    continue  # it exited after reporting (its end-of-output marker)
                raise RuntimeError(f"load generator worker {index} exited before {event!r}")
            if message.get("event") == event:
                found[index] = message
        return [found[i] for i in sorted(found)]

    def wait_ready(self, timeout: float = 120) -> tuple[int, int]:
        """Block until every worker has connected; return (connected, failed)."""
        ready = self._gather("ready", timeout)
        return sum(r["connected"] for r in ready), sum(r["failed"] for r in ready)

    def start(self, at_epoch: float) -> None:
        """Release all workers at wall-clock time `at_epoch`."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"start": at_epoch}) + "\n")
            proc.stdin.flush()

    def collect(self) -> LoadResult:
        """Wait for the results (the workers stop by themselves after warm-up+duration+drain)."""
        c = self.config
        results = self._gather("result", c.warmup + c.duration + c.drain + 30)
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r["errors"])
        return LoadResult(
            config=c,
            connected=sum(r["connected"] for r in results),
            connect_failed=sum(r["connect_failed"] for r in results),
            answers=sum(r["answers"] for r in results),
            frames=sum(r["frames"] for r in results),
            late=sum(r["late"] for r in results),
            unsent=sum(r["unsent"] for r in results),
            errors=dict(errors),
            latencies_us=sorted(v for r in results for v in r["latencies_us"]),
            gen_cpu=[r["cpu_s"] / r["wall_s"] if r["wall_s"] else math.nan for r in results],
            gen_rss_kb=[r["rss_kb"] for r in results],
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


def run_load(config: LoadConfig, lead_in: float = 0.5) -> LoadResult:
    """Connect, run the schedule, return the merged result (standalone use)."""
    gen = LoadGen(config)
    try:
        connected, failed = gen.wait_ready()
        print(
            f"connected {connected} chargers ({failed} failed); running "
            f"{config.warmup:g} s warm-up + {config.duration:g} s",
            file=sys.stderr,
        )
        gen.start(time.time() + lead_in)
        return gen.collect()
    finally:
        gen.close()


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by this CLI and the scenarios."""
    defaults = LoadConfig(url="")
    parser.add_argument(
        "--chargers", type=int, default=defaults.chargers, help="simulated chargers (connections)"
    )
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="total offered CALLs per second"
    )
    parser.add_argument(
        "--warmup", type=float, default=defaults.warmup, help="seconds before the steady window"
    )
    parser.add_argument(
        "--duration", type=float, default=defaults.duration, help="steady window in seconds"
    )
    parser.add_argument(
        "--drain", type=float, default=defaults.drain, help="seconds to wait for late answers"
    )
    parser.add_argument(
        "--procs",
        "--gen-procs",
        dest="procs",
        type=int,
        default=defaults.procs,
        help="load generator processes",
    )
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=defaults.connect_concurrency,
        help="handshakes in flight per generator process",
    )


def load_config(args: argparse.Namespace, url: str) -> LoadConfig:
    return LoadConfig(
        url=url,
        chargers=args.chargers,
        rate=args.rate,
        warmup=args.warmup,
        duration=args.duration,
        drain=args.drain,
        procs=args.procs,
        connect_concurrency=args.connect_concurrency,
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        trio.run(_worker_main, LoadConfig(**json.loads(argv[1])), int(argv[2]))
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.load.loadgen", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--url", required=True, help="endpoint; chargers connect to <url>/<identity>"
    )
    add_load_options(parser)
    args = parser.parse_args(argv)
    print(run_load(load_config(args, args.url)).summary())


if __name__ == "__main__":
    main()
