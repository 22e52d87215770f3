"""The journal survives everything but cancellation, and forwarding (`submit`) never notices.

Sans database: `MemoryStore` decodes the records as the real store does and keeps them. The
spill log is real (in tmp_path); the disk fills through the spill log's `_write` seam here, and
for real (a full tmpfs) in tests/store/test_capture_disk_full.py. Time is trio's autojump clock,
so every wait below is virtual.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

import proxy.capture.spill
from proxy.capture.database_store import StoreOutcome, decode_record
from proxy.capture.dead_letters import DeadLetter
from proxy.capture.events import ChargerBooted, Event, MeterValuesReported, Sample
from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog


def boot(n: int, vendor: str = "Vendor") -> Event:
    return ChargerBooted(
        f"00000000-0000-0000-0000-{n:012d}",
        "CP-1",
        float(n),
        vendor,
        "Model",
        None,
        None,
        None,
        None,
        None,
        None,
        "Accepted",
    )


def huge_multiplier(n: int) -> Event:
    """What the tracker made before its bounds: msgpack cannot encode an int beyond 64 bits."""
    sample = Sample(
        "2026-01-01T10:00:00Z",
        "Energy.Active.Import.Register",
        None,
        "Wh",
        "1",
        None,
        10**20,
        error="multiplier out of range",
    )
    return MeterValuesReported(
        f"00000000-0000-0000-0001-{n:012d}", "CP-1", float(n), None, 1, None, (sample,)
    )


class MemoryStore:
    """An EventStore keeping what it is given; `down` makes it fail and not answer."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.letters: list[DeadLetter] = []
        self.down = False
        self.batches: list[int] = []

    async def store(self, records: Sequence[bytes]) -> StoreOutcome:
        await trio.sleep(0.001)
        if self.down:
            raise ConnectionRefusedError("database down")
        self.batches.append(len(records))
        items = [decode_record(record) for record in records]
        self.letters += [item for item in items if isinstance(item, DeadLetter)]
        events = [item for item in items if not isinstance(item, DeadLetter)]
        self.events += events
        return StoreOutcome(stored=len(events), kept=len(items) - len(events))

    async def answers(self) -> bool:
        return not self.down


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 20 ms of real idleness: the journal waits on threads
    (the spill log's reads and flushes), and a clock that jumped at once while a thread ran
    would race through the polling below and through the journal's own deadlines."""
    return trio.testing.MockClock(autojump_threshold=0.02)


async def until(condition, limit: float = 600) -> None:
    """Wait (in virtual time) until `condition()` holds."""
    with trio.fail_after(limit):
        while not condition():
            await trio.sleep(0.05)


def disk_full(fd: int, data: memoryview) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_an_event_that_cannot_be_encoded_becomes_a_dead_letter_and_its_batch_is_stored(
    autojump_clock, tmp_path, nursery, caplog
):
    store = MemoryStore()
    journal = Journal(SpillLog(tmp_path), retry_interval=1.0)
    await nursery.start(journal.run, store)
    lone_surrogate = boot(
        3, vendor="\ud800"
    )  # neither msgpack nor JSON can encode it: its repr is kept
    journal.submit([boot(1), huge_multiplier(2), boot(2)])
    journal.submit([lone_surrogate])
    await until(lambda: len(store.events) + len(store.letters) == 4)
    assert store.events == [boot(1), boot(2)]
    assert [(d.event_id, d.identity, d.event_kind, d.stage, d.format) for d in store.letters] == [
        ("00000000-0000-0000-0001-000000000002", "CP-1", "meter_values", "encode", "json"),
        ("00000000-0000-0000-0000-000000000003", "CP-1", "charger_booted", "encode", "repr"),
    ]
    assert (
        msgspec.json.decode(store.letters[0].payload)["samples"][0]["multiplier"] == 10**20
    )  # kept whole
    assert "\\ud800" in store.letters[1].payload.decode()
    assert "OverflowError" in store.letters[0].error
    assert (journal.stats.dead_letters, journal.stats.failures["encode"], journal.stats.lost) == (
        2,
        2,
        0,
    )
    logged = [r for r in caplog.records if r.getMessage() == "event kept in the dead-letter table"]
    assert [(r.identity, r.event_id, r.kind, r.stage) for r in logged] == [
        ("CP-1", d.event_id, d.event_kind, "encode") for d in store.letters
    ]


async def test_unencodable_events_on_the_way_to_disk_are_dead_letters_too(
    autojump_clock, tmp_path, nursery
):
    store = MemoryStore()
    store.down = True
    journal = Journal(SpillLog(tmp_path), retry_interval=1.0)
    await nursery.start(journal.run, store)
    journal.submit([boot(1)])
    await until(lambda: journal.spilling)
    journal.submit([huge_multiplier(2), boot(2)])  # straight to the spill log
    store.down = False
    await until(lambda: not journal.spilling)
    assert store.events == [boot(1), boot(2)]
    assert [(d.stage, d.event_kind) for d in store.letters] == [("encode", "meter_values")]
    assert journal.stats.lost == 0


async def test_submit_never_raises(autojump_clock, tmp_path, nursery, monkeypatch, caplog):
    store = MemoryStore()
    store.down = True
    spill = SpillLog(tmp_path)
    journal = Journal(spill, capacity=1)
    await nursery.start(journal.run, store)
    journal.submit([boot(1)])
    await until(lambda: journal.spilling)

    def broken(payloads: Sequence[bytes]) -> None:
        raise RuntimeError("a bug in the spill log")

    monkeypatch.setattr(spill, "append", broken)
    journal.submit([boot(2), boot(3)])  # does not raise
    assert journal.stats.lost == 2 and journal.stats.failures["internal"] == 1
    assert any(r.getMessage() == "events could not be spilled; lost" for r in caplog.records)


async def test_a_full_disk_is_survived_with_bounded_memory_and_capture_catches_up(
    autojump_clock, tmp_path, monkeypatch, caplog
):
    """Database down and disk full: submit goes on, what fits the memory bound waits, the rest is
    counted lost; with space back the spill log fills and drains into the database."""
    store = MemoryStore()
    store.down = True
    record = len(msgspec.msgpack.encode(boot(0))) + 8
    spill = SpillLog(tmp_path, max_buffered_bytes=10 * record)
    journal = Journal(spill, retry_interval=1.0)
    monkeypatch.setattr(proxy.capture.spill, "_write", disk_full)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run, store)
        for n in range(1, 31):
            journal.submit([boot(n)])  # never raises, never waits
            await trio.sleep(0.05)
        await until(lambda: journal.stats.failures["spill_write"] >= 3)
        assert journal.spill_failing and spill.records_buffered == 10
        assert journal.stats.lost == 20  # 1..10 wait in memory; each later one did not fit
        assert any(
            r.getMessage() == "spill log's memory buffer full (disk failing): events lost"
            for r in caplog.records
        )
        assert any(r.getMessage().startswith("spill log cannot be written") for r in caplog.records)
        monkeypatch.undo()  # space again
        store.down = False
        await until(lambda: not journal.spilling)
        assert not journal.spill_failing
        assert store.events == [boot(n) for n in range(1, 11)]
        assert journal.stats.replayed + journal.stats.lost == journal.stats.submitted == 30
        journal.submit([boot(31)])  # and direct again
        await until(lambda: len(store.events) == 11)
        nursery.cancel_scope.cancel()
    spill.close()


async def test_stopping_on_a_full_disk_counts_what_could_not_be_flushed(
    autojump_clock, tmp_path, monkeypatch, caplog
):
    store = MemoryStore()
    store.down = True
    spill = SpillLog(tmp_path)
    journal = Journal(spill, retry_interval=1.0)
    monkeypatch.setattr(proxy.capture.spill, "_write", disk_full)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run, store)
        journal.submit([boot(1), boot(2)])
        await until(lambda: journal.spilling and journal.stats.failures["spill_write"] > 0)
        nursery.cancel_scope.cancel()  # run ends without raising
    assert journal.stats.lost == 2
    assert any(
        r.getMessage() == "spill log cannot be written at shutdown: events lost"
        for r in caplog.records
    )
    spill.close()


class UnreliableStore(MemoryStore):
    """A store with bugs: the first `store` returns nothing, the first probe raises."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_answer = self.bad_probe = True

    async def store(self, records: Sequence[bytes]) -> StoreOutcome:
        outcome = await super().store(records)
        if self.bad_answer:
            self.bad_answer = False
            return None  # type: ignore[return-value]
        return outcome

    async def answers(self) -> bool:
        if self.bad_probe:
            self.bad_probe = False
            raise RuntimeError("a bug in the probe")
        return await super().answers()


async def test_journal_tasks_outlive_their_bugs(autojump_clock, tmp_path, nursery, caplog):
    store = UnreliableStore()
    journal = Journal(SpillLog(tmp_path), retry_interval=1.0)
    await nursery.start(journal.run, store)
    journal.submit([boot(1)])  # stored, but the writer fails on the answer: it starts again
    await until(lambda: journal.stats.failures["internal"] == 1)
    store.down = True
    journal.submit([boot(2)])  # spilled; the replayer's first probe raises, which means "no"
    await until(lambda: journal.spilling)
    store.down = False
    await until(lambda: not journal.spilling)
    journal.submit([boot(3)])
    await until(lambda: boot(3) in store.events)
    assert store.events == [boot(1), boot(2), boot(3)]
    assert any(
        r.getMessage() == "journal writer failed; restarting it" and r.exc_info
        for r in caplog.records
    )


class SlowForBigBatches(MemoryStore):
    """The database answers, but a batch of more than `limit` records never finishes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    async def store(self, records: Sequence[bytes]) -> StoreOutcome:
        if len(records) > self.limit:
            await trio.sleep_forever()
        return await super().store(records)


async def test_a_replay_batch_too_slow_to_store_is_halved_until_it_passes(
    autojump_clock, tmp_path, nursery
):
    spill = SpillLog(tmp_path)
    spill.append([msgspec.msgpack.encode(boot(n)) for n in range(1, 41)])
    spill.flush()
    store = SlowForBigBatches(limit=6)
    journal = Journal(spill, batch_size=40, retry_interval=1.0, store_timeout=5.0)
    await nursery.start(journal.run, store)
    await until(lambda: not journal.spilling)
    assert store.events == [boot(n) for n in range(1, 41)]
    assert max(store.batches) <= 6 and journal.stats.database_errors == 3  # 40 → 20 → 10 → 5


async def test_spill_read_and_position_failures_are_counted_and_retried(
    autojump_clock, tmp_path, nursery, monkeypatch
):
    spill = SpillLog(tmp_path)
    spill.append([msgspec.msgpack.encode(boot(n)) for n in range(1, 4)])
    spill.flush()
    read, acknowledge = spill.read_batch, spill.acknowledge
    failures = {"read": 1, "ack": 1}

    def failing_read(*args: object) -> object:
        if failures["read"]:
            failures["read"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return read(*args)  # type: ignore[arg-type]

    def failing_ack(position: proxy.capture.spill.Position) -> None:
        if failures["ack"]:
            failures["ack"] -= 1
            acknowledge(position)
            raise OSError(errno.ENOSPC, "No space left on device")
        acknowledge(position)

    monkeypatch.setattr(spill, "read_batch", failing_read)
    monkeypatch.setattr(spill, "acknowledge", failing_ack)
    store = MemoryStore()
    journal = Journal(spill, retry_interval=1.0)
    await nursery.start(journal.run, store)
    await until(lambda: not journal.spilling)
    assert store.events == [boot(n) for n in range(1, 4)]
    assert (journal.stats.failures["spill_read"], journal.stats.failures["spill_ack"]) == (1, 1)


def test_failure_stages_are_all_exported_from_the_start(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from proxy.runtime.metrics import JournalCollector

    with SpillLog(tmp_path) as spill:
        registry = CollectorRegistry()
        registry.register(JournalCollector(Journal(spill)))
        for stage in (
            "encode",
            "spill_write",
            "spill_read",
            "spill_ack",
            "dead_letter",
            "internal",
        ):
            assert (
                registry.get_sample_value("ere_proxy_capture_failures_total", {"stage": stage}) == 0
            )
        assert registry.get_sample_value("ere_proxy_capture_dead_letters_total") == 0
        assert registry.get_sample_value("ere_proxy_journal_spill_failing") == 0


@pytest.fixture(autouse=True)
def _quiet_expected_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
