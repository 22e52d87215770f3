"""Spill log: round trips, rotation, acknowledgement, torn tails, corruption, the size bound,
a real SIGKILL, and random operation sequences checked against an in-memory model."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from proxy.capture.spill import HEADER, Batch, Position, SpillError, SpillFull, SpillLog

REPO = Path(__file__).resolve().parents[2]


def payload(i: int) -> bytes:
    return f"event-{i}:".encode() + bytes([i % 251]) * (i * 37 % 90)


def read_all(log: SpillLog, max_records: int = 1000) -> list[bytes]:
    return [p for batch in log.read_batches(max_records) for p in batch.payloads]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.spill"))


def test_round_trip(tmp_path: Path) -> None:
    records = [payload(i) for i in range(50)] + [b""]
    with SpillLog(tmp_path) as log:
        assert log.read_batch(10) is None
        log.append(records)
        assert log.records_buffered == 51 and log.records_pending == 0
        assert log.read_batch(10) is None  # only flushed records are visible
        assert log.flush() == 51
        assert log.flush() == 0
        assert log.records_buffered == 0 and log.records_pending == 51
        assert read_all(log, 7) == records
        assert log.bytes_on_disk == sum(os.path.getsize(f) for f in segment_files(tmp_path))
    with SpillLog(tmp_path) as log:
        assert read_all(log) == records
        assert log.records_pending == 51
        assert log.truncated_bytes == log.corrupt_records == 0


def test_close_discards_unflushed_records(tmp_path: Path) -> None:
    with SpillLog(tmp_path) as log:
        log.append([b"kept"])
        log.flush()
        log.append([b"lost"])
    with SpillLog(tmp_path) as log:
        assert read_all(log) == [b"kept"]


def test_many_records_across_rotations(tmp_path: Path) -> None:
    records = [payload(i) for i in range(3000)]
    with SpillLog(tmp_path, segment_bytes=2000) as log:
        for start in range(0, 3000, 113):
            log.append(records[start : start + 113])
            log.flush()
        assert log.segments == len(segment_files(tmp_path)) > 50
        assert all(os.path.getsize(f) <= 2000 for f in segment_files(tmp_path))
        assert read_all(log, 97) == records
    with SpillLog(tmp_path, segment_bytes=2000) as log:
        assert read_all(log, 1000) == records
        assert log.records_pending == 3000


def test_record_larger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    big = bytes(range(256)) * 20
    with SpillLog(tmp_path, segment_bytes=100) as log:
        log.append([b"a", big, b"b"])
        log.flush()
        assert read_all(log) == [b"a", big, b"b"]
        assert log.segments == 3


def test_acknowledge_deletes_segments_and_restart_keeps_the_rest(tmp_path: Path) -> None:
    records = [payload(i) for i in range(500)]
    with SpillLog(tmp_path, segment_bytes=1500) as log:
        log.append(records)
        log.flush()
        before_files, before_bytes = len(segment_files(tmp_path)), log.bytes_on_disk
        batch = log.read_batch(200)
        assert batch is not None and batch.payloads == records[:200]
        log.acknowledge(batch.end)
        assert log.records_pending == 300
        assert len(segment_files(tmp_path)) < before_files
        assert log.bytes_on_disk < before_bytes
        assert log.bytes_on_disk == sum(os.path.getsize(f) for f in segment_files(tmp_path))
        log.acknowledge(batch.end)  # repeating an acknowledgement is harmless
        log.acknowledge(Position(0, HEADER, 0))  # so is an older one
    with SpillLog(tmp_path, segment_bytes=1500) as log:
        # the acknowledged position was saved: nothing acknowledged comes back
        assert log.records_pending == 300
        assert read_all(log, 64) == records[200:]
        batch = log.read_batch(1000)
        assert batch is not None
        log.acknowledge(batch.end)
        assert log.records_pending == 0 and log.bytes_on_disk == 0
        assert segment_files(tmp_path) == []
        log.append([b"after"])
        log.flush()
        assert read_all(log) == [b"after"]
    with SpillLog(tmp_path, segment_bytes=1500) as log:
        assert read_all(log) == [b"after"]


def test_lost_acknowledgement_file_means_replay_not_loss(tmp_path: Path) -> None:
    records = [payload(i) for i in range(40)]
    with SpillLog(tmp_path) as log:
        log.append(records)
        log.flush()
        batch = log.read_batch(15)
        assert batch is not None
        log.acknowledge(batch.end)
    (tmp_path / "acknowledged").write_bytes(b"garbage")
    with SpillLog(tmp_path) as log:
        assert read_all(log) == records  # replayed again: ids are deterministic, inserts idempotent


def test_invalid_acknowledgement_is_refused(tmp_path: Path) -> None:
    with SpillLog(tmp_path) as log:
        log.append([b"x"])
        log.flush()
        with pytest.raises(ValueError):
            log.acknowledge(Position(99, HEADER, 0))
        with pytest.raises(ValueError):
            log.acknowledge(Position(1, 10_000, 1))
        assert read_all(log) == [b"x"]


def test_replay_while_appending(tmp_path: Path) -> None:
    old = [payload(i) for i in range(300)]
    new = [payload(i) for i in range(300, 600)]
    with SpillLog(tmp_path, segment_bytes=1000) as log:
        log.append(old)
        log.flush()
        replayed: list[bytes] = []
        for chunk in range(0, 300, 30):
            batch = log.read_batch(50)
            assert batch is not None
            replayed += batch.payloads
            log.acknowledge(batch.end)
            log.append(new[chunk : chunk + 30])
            log.flush()
        while (batch := log.read_batch(50)) is not None:
            replayed += batch.payloads
            log.acknowledge(batch.end)
        assert replayed == old + new
        assert log.records_pending == 0 and segment_files(tmp_path) == []


def test_read_ahead_from_a_position(tmp_path: Path) -> None:
    with SpillLog(tmp_path, segment_bytes=200) as log:
        log.append([payload(i) for i in range(30)])
        log.flush()
        first = log.read_batch(10)
        assert first is not None
        second = log.read_batch(10, first.end)
        assert second is not None and second.payloads == [payload(i) for i in range(10, 20)]
        log.acknowledge(second.end)
        assert log.read_batch(100, first.end) == log.read_batch(
            100
        )  # clamped to the acknowledgement


def write_records(directory: Path, records: list[bytes], **kwargs: int) -> None:
    with SpillLog(directory, **kwargs) as log:
        log.append(records)
        log.flush()


def test_torn_tail_at_every_offset_is_repaired(tmp_path: Path) -> None:
    records = [payload(i) for i in range(5)] + [b"the last record, torn anywhere"]
    source = tmp_path / "source"
    write_records(source, records)
    (segment,) = segment_files(source)
    data = segment.read_bytes()
    last_start = len(data) - 8 - len(records[-1])
    for cut in range(last_start, len(data)):
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        (directory / segment.name).write_bytes(data[:cut])
        with SpillLog(directory) as log:
            assert read_all(log) == records[:-1]
            assert log.truncated_bytes == cut - last_start
            assert log.corrupt_records == 0
            log.append([b"next"])
            log.flush()
        assert os.path.getsize(directory / segment.name) == last_start
        with SpillLog(directory) as log:
            assert read_all(log) == records[:-1] + [b"next"]
            assert log.truncated_bytes == 0


def test_torn_segment_header_and_zero_filled_tail(tmp_path: Path) -> None:
    write_records(tmp_path, [b"one"], segment_bytes=20)
    write_records(tmp_path, [b"two"], segment_bytes=20)  # a fresh segment after reopening
    older, newer = segment_files(tmp_path)
    for cut in range(HEADER + 1):
        newer.write_bytes(b"OCPPSPL\x01"[:cut])
        with SpillLog(tmp_path) as log:
            assert read_all(log) == [b"one"]
        assert segment_files(tmp_path) == [older]
    # a file system may leave the tail of a crashed write as zeros
    with open(older, "ab") as f:
        f.write(bytes(64))
    with SpillLog(tmp_path) as log:
        assert read_all(log) == [b"one"]
        assert log.truncated_bytes == 64


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def record_offsets(data: bytes) -> list[int]:
    """Start offsets of the records in a segment image."""
    offsets, offset = [], HEADER
    while offset < len(data):
        offsets.append(offset)
        offset += 8 + int.from_bytes(data[offset : offset + 4], "little")
    return offsets


def test_corruption_in_an_older_segment_is_skipped_and_counted(tmp_path: Path) -> None:
    records = [payload(i) for i in range(100)]
    write_records(tmp_path, records, segment_bytes=1000)
    files = segment_files(tmp_path)
    assert len(files) > 3
    per_segment = [len(record_offsets(f.read_bytes())) for f in files]
    data = files[1].read_bytes()
    bad = record_offsets(data)[2]
    flip_byte(files[1], bad + 9)  # inside the payload of the second segment's third record
    with SpillLog(tmp_path) as log:
        survived = read_all(log)
        assert log.corrupt_records == 1
        assert log.corrupt_bytes == len(data) - bad
        assert log.truncated_bytes == 0
        assert log.records_pending == len(survived)
    gap = per_segment[0] + 2
    assert survived == records[:gap] + records[per_segment[0] + per_segment[1] :]
    with SpillLog(tmp_path) as log:  # still readable, still counted, nothing repaired away
        assert read_all(log) == survived
        assert log.corrupt_records == 1


def test_damage_in_the_newest_segment_counts_as_a_torn_tail(tmp_path: Path) -> None:
    write_records(tmp_path, [payload(i) for i in range(10)])
    (segment,) = segment_files(tmp_path)
    flip_byte(segment, record_offsets(segment.read_bytes())[4] + 2)  # a length field
    with SpillLog(tmp_path) as log:
        assert read_all(log) == [payload(i) for i in range(4)]
        assert log.truncated_bytes > 0 and log.corrupt_records == 0


def test_corruption_found_while_reading_is_counted(tmp_path: Path) -> None:
    records = [payload(i) for i in range(60)]
    with SpillLog(tmp_path, segment_bytes=1000) as log:
        log.append(records)
        log.flush()
        first = segment_files(tmp_path)[0]
        flip_byte(first, HEADER + 8 + len(records[0]) + 8)  # payload of the second record
        survived = read_all(log)
        assert log.corrupt_records == 1
        assert (
            survived[0] == records[0]
            and survived[1:] == records[len(records) - len(survived) + 1 :]
        )
        assert log.records_pending == len(survived)
        batch = log.read_batch(1000)
        assert batch is not None
        log.acknowledge(batch.end)
        assert segment_files(tmp_path) == []


def test_max_bytes_bound(tmp_path: Path) -> None:
    record = bytes(92)  # 100 bytes with its length and CRC
    with SpillLog(tmp_path, max_bytes=1000, segment_bytes=400) as log:
        log.append([record] * 5)
        with pytest.raises(SpillFull) as info:
            log.append([record] * 7)
        assert (info.value.accepted, info.value.dropped) == (5, 2)
        assert log.records_buffered == 10
        log.flush()
        assert log.bytes_on_disk <= 1000 + 4 * HEADER
        with pytest.raises(SpillFull):
            log.append([b""])
        batch = log.read_batch(100)
        assert batch is not None and len(batch.payloads) == 10
        log.acknowledge(batch.end)
        assert log.bytes_on_disk == 0
        log.append([record] * 10)  # room again once the database took the records
        with pytest.raises(SpillFull):
            log.append([bytes(2000)])


def test_failed_sync_requeues_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.capture.spill

    with SpillLog(tmp_path) as log:
        log.append([b"a", b"b"])
        log.flush()
        log.append([b"c", b"d"])

        def failing_sync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(proxy.capture.spill, "_sync", failing_sync)
        with pytest.raises(OSError):
            log.flush()
        assert log.records_buffered == 2 and log.records_pending == 2
        assert read_all(log) == [b"a", b"b"]
        monkeypatch.undo()
        log.append([b"e"])
        assert log.flush() == 3
        assert read_all(log) == [b"a", b"b", b"c", b"d", b"e"]
    with SpillLog(tmp_path) as log:
        assert read_all(log) == [b"a", b"b", b"c", b"d", b"e"]
        assert log.truncated_bytes == log.corrupt_records == 0


def test_directory_is_exclusive(tmp_path: Path) -> None:
    with SpillLog(tmp_path):
        with pytest.raises(SpillError):
            SpillLog(tmp_path)
    SpillLog(tmp_path).close()


def test_append_from_another_thread_during_flushes(tmp_path: Path) -> None:
    records = [payload(i) for i in range(4000)]
    with SpillLog(tmp_path, segment_bytes=5000) as log:

        def produce() -> None:
            for start in range(0, 4000, 40):
                log.append(records[start : start + 40])

        producer = threading.Thread(target=produce)
        producer.start()
        while producer.is_alive():
            log.flush()
        producer.join()
        log.flush()
        assert log.records_buffered == 0
        assert read_all(log) == records


CHILD = """
import sys
from proxy.capture.spill import SpillLog

def record(i, j):
    return f"{i}:{j}:".encode().ljust(40 + (i * 7 + j) % 60, b".")

log = SpillLog(sys.argv[1], segment_bytes=3000)
i = 0
while True:
    log.append([record(i, j) for j in range(20)])
    log.flush()
    print("flushed", i, flush=True)
    if i % 5 == 4:
        batch = log.read_batch(20)
        log.acknowledge(batch.end)
        print("acked", flush=True)
    i += 1
"""


def child_record(i: int, j: int) -> bytes:
    return f"{i}:{j}:".encode().ljust(40 + (i * 7 + j) % 60, b".")


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_keeps_every_flushed_batch(tmp_path: Path, seed: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("flushed")
        time.sleep(random.Random(seed).uniform(0.05, 0.4))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lines = proc.stdout.read().split("\n")[
        :-1
    ]  # the last piece is empty, or a line the kill cut short
    proc.stdout.close()
    flushed = max((int(line.split()[1]) for line in lines if line.startswith("flushed")), default=0)
    acked = sum(1 for line in lines if line == "acked")
    expected = [child_record(i, j) for i in range(flushed + 200) for j in range(20)]
    with SpillLog(tmp_path) as log:
        survived = read_all(log)
    assert survived, "flushed batches vanished"
    start = expected.index(survived[0])
    # acknowledged records stay gone (the last acknowledgement may not have been reported)
    reported = 20 * acked
    assert start in (reported, reported + 20)
    assert survived == expected[start : start + len(survived)]
    assert start + len(survived) >= 20 * (flushed + 1)


Record = st.binary(max_size=40)


class SpillMachine(RuleBasedStateMachine):
    """Random append/flush/read/acknowledge/reopen sequences against a list-based model."""

    @initialize()
    def open(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.kwargs = {"segment_bytes": 120, "max_bytes": 1 << 30}
        self.log = SpillLog(self.tmp.name, **self.kwargs)
        self.durable: list[bytes] = []  # every flushed record, oldest first
        self.acked = 0  # how many of them are acknowledged
        self.buffer: list[bytes] = []
        self.last: tuple[Batch, int] | None = (
            None  # a batch read from the acknowledgement, its start
        )

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.close()
            self.tmp.cleanup()

    @rule(records=st.lists(Record, max_size=8))
    def append(self, records: list[bytes]) -> None:
        self.log.append(records)
        self.buffer += records

    @rule()
    def flush(self) -> None:
        assert self.log.flush() == len(self.buffer)
        self.durable += self.buffer
        self.buffer = []

    @rule(max_records=st.integers(1, 12))
    def read(self, max_records: int) -> None:
        batch = self.log.read_batch(max_records)
        expected = self.durable[self.acked : self.acked + max_records]
        if not expected:
            assert batch is None
            self.last = None
            return
        assert batch is not None and batch.payloads == expected
        self.last = (batch, self.acked)
        ahead = self.log.read_batch(max_records, batch.end)
        after = self.durable[self.acked + len(expected) : self.acked + len(expected) + max_records]
        assert (ahead.payloads if ahead else []) == after

    @precondition(lambda self: self.last is not None)
    @rule()
    def acknowledge(self) -> None:
        assert self.last is not None
        batch, start = self.last
        self.log.acknowledge(batch.end)
        self.acked = max(self.acked, start + len(batch.payloads))
        self.last = None

    @rule(clean=st.booleans())
    def reopen(self, clean: bool) -> None:
        if clean:
            self.flush()
        self.log.close()
        self.buffer = []
        self.last = None
        self.log = SpillLog(self.tmp.name, **self.kwargs)
        assert self.log.truncated_bytes == 0 and self.log.corrupt_records == 0

    @invariant()
    def counters_match(self) -> None:
        if not hasattr(self, "log"):
            return
        assert self.log.records_pending == len(self.durable) - self.acked
        assert self.log.records_buffered == len(self.buffer)
        files = [f for f in Path(self.tmp.name).iterdir() if f.suffix == ".spill"]
        assert self.log.bytes_on_disk == sum(f.stat().st_size for f in files)
        if self.acked == len(self.durable):
            assert files == []


SpillMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_spill_against_model = SpillMachine.TestCase


def test_files_are_private_to_the_proxy_whatever_the_umask(tmp_path: Path) -> None:
    """Spilled events hold personal data: the directory is 0700, every file in it 0600."""
    directory = tmp_path / "spill"
    old_umask = os.umask(0)
    try:
        with SpillLog(directory) as log:
            log.append([b"a"])
            log.flush()
            batch = log.read_batch(10)
            assert batch is not None
            log.append([b"b"])
            log.flush()
            log.acknowledge(batch.end)  # writes the acknowledgement file
    finally:
        os.umask(old_umask)
    assert directory.stat().st_mode & 0o777 == 0o700
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["000000000001.spill", "acknowledged", "lock"]
    assert {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()} == dict.fromkeys(
        files, 0o600
    )


def test_opening_tightens_what_an_older_version_left(tmp_path: Path) -> None:
    with SpillLog(tmp_path) as log:
        log.append([b"a", b"b"])
        log.flush()
        batch = log.read_batch(1)
        assert batch is not None
        log.acknowledge(batch.end)
    tmp_path.chmod(0o755)
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    with SpillLog(tmp_path) as log:
        assert read_all(log) == [b"b"]
    assert tmp_path.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o600}


def test_the_memory_bound_holds_while_flushing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What waits in memory is bounded apart from the disk bound; the excess is refused as "memory"."""
    import proxy.capture.spill

    record = bytes(92)  # 100 bytes with its length and CRC
    with SpillLog(tmp_path, max_buffered_bytes=500) as log:

        def disk_full(fd: int, data: memoryview) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(proxy.capture.spill, "_write", disk_full)
        log.append([record] * 3)
        with pytest.raises(OSError):
            log.flush()
        with pytest.raises(SpillFull) as info:
            log.append([record] * 4)
        assert (info.value.accepted, info.value.dropped, info.value.bound) == (2, 2, "memory")
        assert log.records_buffered == 5 and segment_files(tmp_path) == []
        monkeypatch.undo()  # space again: the buffer goes to disk, in order
        assert log.flush() == 5
        assert read_all(log) == [record] * 5
        log.append([record] * 5)


def test_a_failed_acknowledgement_save_still_frees_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while saving the position: the segments it completes go anyway (they are what
    fills the disk), the position holds in memory, and a restart replays rather than loses."""
    import proxy.capture.spill

    with SpillLog(tmp_path, segment_bytes=HEADER + 3 * 9) as log:
        log.append(
            [b"1", b"2", b"3", b"4", b"5"]
        )  # 9 bytes each with length and CRC: 3 per segment
        log.flush()
        assert len(segment_files(tmp_path)) == 2
        batch = log.read_batch(4)
        assert batch is not None and batch.payloads == [b"1", b"2", b"3", b"4"]

        def disk_full(fd: int, data: memoryview) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(proxy.capture.spill, "_write", disk_full)
        with pytest.raises(OSError):
            log.acknowledge(batch.end)
        assert [p.name for p in segment_files(tmp_path)] == ["000000000002.spill"]
        assert read_all(log) == [b"5"] and log.records_pending == 1
    monkeypatch.undo()
    with SpillLog(tmp_path) as log:
        assert read_all(log) == [b"4", b"5"]  # the saved position was older: one record comes again
