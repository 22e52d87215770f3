"""Spill log: an append-only, crash-safe on-disk queue of opaque records for the journal.

When the journal cannot hand events to PostgreSQL (its channel is full or the database is down)
it appends their encoded bytes here, flushes in batches, and later replays them into the database
and acknowledges what was written. The log never interprets a payload.

Layout: a directory holding segment files `000000000001.spill`, `000000000002.spill`, ... (the
number only grows), each an 8-byte header (magic and version) followed by records
`length (u32 LE) | crc32 (u32 LE) | payload`, where the CRC covers the length bytes and the payload
(so a zero-filled tail never passes as an empty record). A new segment starts when the current one
would exceed `segment_bytes`; a single record larger than that gets a segment of its own.
`acknowledged` holds the last acknowledged position; `lock` is held with `flock` while the log is
open, so two processes can never share a directory (give each proxy worker its own). Session
events are personal data (charge cards, meter readings): the directory is kept at mode 0700 and
every file in it at 0600, whatever the umask (opening a log tightens what an older version left).

Durability: `flush()` writes the buffered records and fdatasyncs them; a segment is fsynced before
the next one is created, and the directory is fsynced when a segment is created. Records are
readable once flushed. On open every segment is scanned: a torn tail of the newest segment (a
partial record or CRC mismatch, what a kill or power loss during `flush()` leaves) is truncated,
so a crash loses at most the batch being flushed and never anything an earlier `flush()` returned
from. The surviving records are always a prefix of what was appended. Damage anywhere else (disk
corruption) cannot be resynchronised: the rest of that segment is skipped and counted in
`corrupt_records` / `corrupt_bytes`; nothing raises.

Acknowledgement: `acknowledge(position)` marks every record before `position` as stored in the
database. Segments with nothing unacknowledged left are deleted; the position is saved in
`acknowledged` (atomic rename, without fsync), so a restart normally resumes where replay stopped.
After a power loss the file may be older than the truth and some records are replayed twice,
which is harmless because event ids are deterministic and inserts idempotent. If saving the
position fails (disk full), the position still moves in memory and the segments it completes are
still deleted (which frees the space), and then the OSError propagates; the file is older than the
truth until the next acknowledgement saves it, so a restart meanwhile replays, never loses.

Bounds: `max_bytes` caps the bytes on disk plus those buffered (segment headers aside), and
`max_buffered_bytes` caps those buffered alone: records wait in memory between flushes, and for
as long as flushing fails (disk full, I/O errors), so this is the memory the log may hold. `append`
keeps the records that fit and raises `SpillFull` (saying which bound) for the rest, which the
caller must count as lost; with generous bounds and a database that comes back this is a last
resort.

Write errors: `flush` keeps every record it could not make durable, in order, for the next
`flush`, and raises the OSError; the caller retries later (see `proxy.capture.journal`), and when space
returns the buffer goes to disk as if nothing happened.

Threads: `append` does no I/O and may be called from any thread at any time, also while another
thread is inside `flush`, `read_batch` or `acknowledge` (a short lock guards the buffer). The
other methods do I/O, belong in a worker thread, and are serialised by an internal lock, so they
are safe from any thread but never run in parallel. Opening scans all segments (a few seconds per
GiB), so do that in a worker thread as well.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

MAGIC = b"OCPPSPL\x01"  # last byte is the format version
HEADER = len(MAGIC)
_RECORD = struct.Struct("<II")  # length, crc32(length bytes + payload)
_ACK = struct.Struct("<8sQQI")  # magic, segment, offset, crc32 of the preceding fields
_ACK_MAGIC = b"OCPPACK\x01"
_ACK_FILE = "acknowledged"
_LOCK_FILE = "lock"
_SEGMENT_NAME = re.compile(r"^(\d{12})\.spill$")
_MAX_PAYLOAD = 0xFFFF_FFFF
_DIR_MODE = 0o700
_FILE_MODE = 0o600

_sync = getattr(os, "fdatasync", os.fsync)
_write = os.write  # a seam for tests that cannot make a real file system fail


class SpillError(Exception):
    """The spill directory cannot be used (for instance another process holds it)."""


class SpillFull(Exception):
    """`append` kept only `accepted` records; `dropped` did not fit under a bound.

    `bound` is "disk" (`max_bytes`) or "memory" (`max_buffered_bytes`: flushing is behind or failing).
    """

    def __init__(self, accepted: int, dropped: int, bound: str = "disk") -> None:
        super().__init__(f"spill log full ({bound}): {dropped} record(s) dropped, {accepted} kept")
        self.accepted = accepted
        self.dropped = dropped
        self.bound = bound


class Position(NamedTuple):
    """A point between two records: byte `offset` in segment `segment`, after `ordinal` records.

    Positions come from `read_batch`; they order like the records they separate.
    """

    segment: int
    offset: int
    ordinal: int


class Batch(NamedTuple):
    """Payloads read oldest first, and the position just after the last of them."""

    payloads: list[bytes]
    end: Position


@dataclass
class _Segment:
    seq: int
    path: Path
    end: int  # offset after the last valid record
    records: int  # valid records before `end`
    size: int  # bytes the file occupies, including any unreadable tail


def _crc(length_bytes: bytes | memoryview, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length_bytes))


def _encode(payload: bytes) -> bytes:
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", _crc(length, payload)) + payload


def _scan(data: bytes, mark: int | None = None) -> tuple[int, int, int | None]:
    """Walk a whole segment image: (end of the valid prefix, records in it, record index at `mark`).

    The end is 0 when the header is missing or wrong; the index is None unless `mark` falls on a
    record boundary within the valid prefix.
    """
    if data[:HEADER] != MAGIC:
        return 0, 0, None
    view = memoryview(data)
    offset, count, index_at_mark = HEADER, 0, None
    while True:
        if offset == mark:
            index_at_mark = count
        if offset + _RECORD.size > len(data):
            break
        length, crc = _RECORD.unpack_from(data, offset)
        end = offset + _RECORD.size + length
        if (
            end > len(data)
            or _crc(view[offset : offset + 4], view[offset + _RECORD.size : end]) != crc
        ):
            break
        offset, count = end, count + 1
    return offset, count, index_at_mark


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpillLog:
    """Append-only segmented log of opaque records; see the module docstring for the contract."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = 16 * 1024 * 1024,
        max_bytes: int = 1024 * 1024 * 1024,
        max_buffered_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if segment_bytes <= HEADER or max_bytes <= 0 or max_buffered_bytes <= 0:
            raise ValueError(
                "segment_bytes, max_bytes and max_buffered_bytes must be positive (segment_bytes > 8)"
            )
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.max_buffered_bytes = max_buffered_bytes
        # damaged records found outside a torn tail (each loses its segment's rest)
        self.corrupt_records = 0
        self.corrupt_bytes = 0  # bytes skipped because of them
        self.truncated_bytes = 0  # torn-tail bytes removed on open

        self._io_lock = threading.Lock()  # segments, active file, acknowledgement, counters above
        self._buffer_lock = threading.Lock()  # buffer and byte accounting; never held during I/O
        self._buffer: list[bytes] = []
        # encoded size of records not yet on disk, including one being flushed
        self._buffered_bytes = 0
        self._buffered_records = 0
        self._disk_bytes = 0
        self._segments: list[_Segment] = []  # oldest first
        self._active_fd: int | None = None  # open for appending to self._segments[-1]
        self._ack = Position(0, HEADER, 0)
        self._next_seq = 1
        self._pending_records = 0  # kept as a plain int so metrics never wait for the I/O lock
        self._closed = False

        self.directory.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        os.chmod(self.directory, _DIR_MODE)  # mkdir leaves an existing directory as it was
        self._lock_fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            os.fchmod(self._lock_fd, _FILE_MODE)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._recover()
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpillError(
                f"spill directory {self.directory} is in use by another process"
            ) from None
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- metrics ---------------------------------------------------------------------------------

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of all segment files (acknowledged records linger until their segment goes)."""
        return self._disk_bytes

    @property
    def records_pending(self) -> int:
        """Flushed records not yet acknowledged."""
        return self._pending_records

    @property
    def records_buffered(self) -> int:
        """Appended records not yet flushed to disk (lost by a crash or `close`)."""
        return self._buffered_records

    @property
    def segments(self) -> int:
        """Segment files in the directory."""
        return len(self._segments)

    # -- writing ---------------------------------------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> None:
        """Buffer `payloads` for the next `flush()`; no I/O.

        Raises `SpillFull` after keeping the longest prefix that fits under `max_bytes` and
        `max_buffered_bytes`, and ValueError (keeping nothing) for a payload over 4 GiB.
        """
        if any(len(p) > _MAX_PAYLOAD for p in payloads):
            raise ValueError("spill payloads are limited to 4 GiB")
        with self._buffer_lock:
            on_disk = self.max_bytes - self._disk_bytes - self._buffered_bytes
            in_memory = self.max_buffered_bytes - self._buffered_bytes
            room = min(on_disk, in_memory)
            accepted = 0
            for payload in payloads:
                need = _RECORD.size + len(payload)
                if need > room:
                    break
                room -= need
                accepted += 1
                self._buffered_bytes += need
            self._buffer.extend(payloads[:accepted])
            self._buffered_records += accepted
        if accepted < len(payloads):
            raise SpillFull(
                accepted, len(payloads) - accepted, "memory" if in_memory < on_disk else "disk"
            )

    def flush(self) -> int:
        """Write and fdatasync the buffered records; return how many were written.

        On an OSError (disk full, I/O error) the records not yet durable go back to the front of
        the buffer, the segment being written is cut back and closed (the next flush starts a new
        one), and the error propagates; a retry may later store a few records twice.
        """
        with self._io_lock:
            self._check_open()
            with self._buffer_lock:
                batch, self._buffer = self._buffer, []
            done = 0
            try:
                while done < len(batch):
                    done += self._write_chunk(batch, done)
            except BaseException:
                with self._buffer_lock:
                    self._buffer[:0] = batch[done:]
                raise
            return done

    def _write_chunk(self, batch: list[bytes], start: int) -> int:
        """Write records from `batch[start:]` that fit the current segment (at least one)."""
        seg = self._segments[-1] if self._active_fd is not None else None
        first = _RECORD.size + len(batch[start])
        if seg is None or (seg.end > HEADER and seg.end + first > self.segment_bytes):
            seg = self._open_segment()
        assert self._active_fd is not None
        fd = self._active_fd
        parts = [MAGIC] if seg.end == 0 else []
        size = seg.end or HEADER
        count = 0
        for payload in batch[start:]:
            need = _RECORD.size + len(payload)
            if count and size + need > self.segment_bytes:
                break
            parts.append(_encode(payload))
            size += need
            count += 1
        record_bytes = size - (seg.end or HEADER)
        data = b"".join(parts)
        try:
            view = memoryview(data)
            while view:
                view = view[_write(fd, view) :]
            _sync(fd)
            if seg.end == 0:
                _fsync_dir(self.directory)
        except BaseException:
            self._abandon_active(seg)
            raise
        seg.end, seg.size, seg.records = size, size, seg.records + count
        self._pending_records += count
        with self._buffer_lock:
            self._disk_bytes += len(data)
            self._buffered_bytes -= record_bytes
            self._buffered_records -= count
        return count

    def _open_segment(self) -> _Segment:
        if self._active_fd is not None:
            os.close(self._active_fd)  # already synced by the write that filled it
            self._active_fd = None
        seq = self._next_seq
        path = self.directory / f"{seq:012d}.spill"
        self._active_fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, _FILE_MODE
        )
        self._next_seq = seq + 1
        seg = _Segment(seq, path, end=0, records=0, size=0)
        self._segments.append(seg)
        return seg

    def _abandon_active(self, seg: _Segment) -> None:
        """After a failed write: cut the file back to its synced end (best effort) and close it."""
        fd, self._active_fd = self._active_fd, None
        assert fd is not None
        try:
            if seg.end == 0:
                self._segments.remove(seg)
                seg.path.unlink(missing_ok=True)
            else:
                os.ftruncate(fd, seg.end)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------------

    def read_batch(self, max_records: int, start: Position | None = None) -> Batch | None:
        """Up to `max_records` flushed records from `start` (default: the acknowledged position).

        Returns None when there is nothing to read. A damaged record met here (the disk changed
        since open) ends its segment: counted, skipped, never raised.
        """
        if max_records <= 0:
            raise ValueError("max_records must be positive")
        with self._io_lock:
            self._check_open()
            pos = self._ack if start is None or start < self._ack else start
            payloads: list[bytes] = []
            end = pos
            for seg in self._segments:
                if seg.seq < pos.segment or len(payloads) >= max_records:
                    continue
                offset, index = (pos.offset, pos.ordinal) if seg.seq == pos.segment else (HEADER, 0)
                if offset >= seg.end:
                    continue
                offset, index = self._read_segment(
                    seg, offset, index, max_records - len(payloads), payloads
                )
                end = Position(seg.seq, offset, index)
            return Batch(payloads, end) if payloads else None

    def read_batches(self, max_records: int) -> Iterator[Batch]:
        """Batches from the acknowledged position to the end; acknowledging is up to the caller."""
        batch = self.read_batch(max_records)
        while batch is not None:
            yield batch
            batch = self.read_batch(max_records, batch.end)

    def _read_segment(
        self, seg: _Segment, offset: int, index: int, limit: int, out: list[bytes]
    ) -> tuple[int, int]:
        """Append up to `limit` payloads of `seg` from `offset` to `out`; return the new offset and index."""
        with open(seg.path, "rb", buffering=256 * 1024) as f:
            f.seek(offset)
            while offset < seg.end and limit > 0:
                head = f.read(_RECORD.size)
                length, crc = _RECORD.unpack(head) if len(head) == _RECORD.size else (0, -1)
                payload = f.read(length) if offset + _RECORD.size + length <= seg.end else b""
                if len(payload) != length or _crc(head[:4], payload) != crc:
                    self._lose_tail(seg, offset, index)
                    break
                out.append(payload)
                offset += _RECORD.size + length
                index += 1
                limit -= 1
        return offset, index

    def _lose_tail(self, seg: _Segment, offset: int, index: int) -> None:
        self.corrupt_records += 1
        self.corrupt_bytes += seg.end - offset
        seg.end, seg.records = offset, index
        self._pending_records = self._pending()

    # -- acknowledging ---------------------------------------------------------------------------

    def acknowledge(self, position: Position) -> None:
        """Mark every record before `position` as stored; delete segments left with nothing to do.

        Positions behind the current acknowledgement are ignored; one beyond the flushed records
        raises ValueError. An OSError from saving the position propagates after the position has
        moved in memory and the completed segments are deleted (see "Acknowledgement" above).
        """
        with self._io_lock:
            self._check_open()
            if position <= self._ack:
                return
            seg = next((s for s in self._segments if s.seq == position.segment), None)
            if seg is None or position.offset > seg.end or position.ordinal > seg.records:
                raise ValueError(f"{position} is not a position of this log")
            self._ack = position
            self._pending_records = self._pending()
            try:
                self._save_ack()
            finally:
                # Safe even if the file is stale: a restart then replays these segments' successors
                # from their start, and deleting them is what frees a full disk.
                self._drop_done_segments()

    def _save_ack(self) -> None:
        fields = _ACK_MAGIC, self._ack.segment, self._ack.offset
        data = _ACK.pack(*fields, zlib.crc32(struct.pack("<8sQQ", *fields)))
        tmp = self.directory / (_ACK_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[_write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / _ACK_FILE)

    def _load_ack(self) -> tuple[int, int] | None:
        try:
            data = (self.directory / _ACK_FILE).read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != _ACK.size:
            return None
        magic, segment, offset, crc = _ACK.unpack(data)
        if magic != _ACK_MAGIC or zlib.crc32(data[:-4]) != crc:
            return None
        return segment, offset

    def _unacknowledged(self, seg: _Segment) -> int:
        if seg.seq < self._ack.segment:
            return 0
        return seg.records - (self._ack.ordinal if seg.seq == self._ack.segment else 0)

    def _pending(self) -> int:
        return sum(self._unacknowledged(s) for s in self._segments)

    def _drop_done_segments(self) -> None:
        while self._segments and self._unacknowledged(self._segments[0]) == 0:
            seg = self._segments.pop(0)
            if not self._segments and self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
            seg.path.unlink(missing_ok=True)
            with self._buffer_lock:
                self._disk_bytes -= seg.size

    # -- opening and closing ---------------------------------------------------------------------

    def _recover(self) -> None:
        """Load the segments, repair a torn tail, and apply the saved acknowledgement."""
        (self.directory / (_ACK_FILE + ".tmp")).unlink(missing_ok=True)
        found = sorted(
            (int(m.group(1)), entry)
            for entry in self.directory.iterdir()
            if (m := _SEGMENT_NAME.match(entry.name))
        )
        saved = self._load_ack()
        ack_seq, ack_offset = saved if saved is not None else (0, HEADER)
        self._next_seq = max([seq for seq, _ in found] + [ack_seq]) + 1
        self._ack = Position(ack_seq, HEADER, 0)
        newest = found[-1][0] if found else None
        if (self.directory / _ACK_FILE).exists():
            os.chmod(self.directory / _ACK_FILE, _FILE_MODE)
        for seq, path in found:
            if seq < ack_seq:
                path.unlink()
                continue
            os.chmod(path, _FILE_MODE)
            data = path.read_bytes()
            end, records, index = _scan(data, ack_offset if seq == ack_seq else None)
            if seq == newest and records == 0:
                # created by a flush that never completed: nothing in it was ever synced
                self.truncated_bytes += len(data)
                path.unlink()
                _fsync_dir(self.directory)
                continue
            if end == len(data):
                pass
            elif seq == newest:
                self.truncated_bytes += len(data) - end
                self._truncate(path, end)
                data = data[:end]
            else:
                self.corrupt_records += 1
                self.corrupt_bytes += len(data) - end
            self._segments.append(_Segment(seq, path, end=end, records=records, size=len(data)))
            if seq == ack_seq:
                if ack_offset >= end:
                    self._ack = Position(seq, end, records)
                elif index is not None:
                    self._ack = Position(seq, ack_offset, index)
        self._disk_bytes = sum(s.size for s in self._segments)
        self._pending_records = self._pending()
        self._drop_done_segments()

    @staticmethod
    def _truncate(path: Path, length: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("spill log is closed")

    def close(self) -> None:
        """Release the files and the directory lock. Unflushed records are discarded: flush first."""
        with self._io_lock:
            if self._closed:
                return
            self._closed = True
            if self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
            os.close(self._lock_fd)
            with self._buffer_lock:
                self._buffer.clear()
                self._buffered_bytes = self._buffered_records = 0

    def __enter__(self) -> SpillLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
