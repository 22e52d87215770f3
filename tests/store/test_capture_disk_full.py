"""A full disk under the spill log is survived: forwarding goes on, capture catches up after.

The spill log lives on a 1 MiB tmpfs filled to the last byte, so its writes fail with a real
ENOSPC from the kernel; where mounting is not allowed (not root, or no mount namespace), the
spill log's `_write` seam raises the same error instead (the test says which in its output).
Everything else is real: the proxy on 127.0.0.1, the journal, its store process, PostgreSQL.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import proxy.capture.spill
from testkit.capture_proxy import WAIT, capture_proxy, healthy_charger, hostile_charger

# Forwarded by both engines (see testkit.engines).
pytestmark = pytest.mark.usefixtures("each_engine")

BURST = 40  # MeterValues sent in one write: the journal's channel (capacity 1) overflows at once


class SmallDisk:
    """A directory on a small file system that the test fills and frees."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        try:
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(path)],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except OSError:  # no mount(8) here
            self.real = False
        else:
            self.real = mounted.returncode == 0
        self._monkeypatch = monkeypatch
        self._filler = path / "filler"

    def fill(self) -> None:
        if not self.real:

            def no_space(fd: int, data: memoryview) -> int:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            self._monkeypatch.setattr(proxy.capture.spill, "_write", no_space)
            return
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, bytes(4096))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def free(self) -> None:
        if self.real:
            self._filler.unlink()
        else:
            self._monkeypatch.undo()

    def unmount(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    path = tmp_path / "disk"
    path.mkdir()
    disk = SmallDisk(path, monkeypatch)
    print(
        "spill log on",
        "a 1 MiB tmpfs (real ENOSPC)" if disk.real else "a seam raising ENOSPC (no mount)",
    )
    yield disk
    disk.unmount()


def meter_values(n: int) -> bytes:
    sampled = [{"value": str(1000 + n), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
    return json.dumps(
        [
            2,
            f"mv{n}",
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": 7,
                "meterValue": [{"timestamp": "2026-01-01T10:00:00Z", "sampledValue": sampled}],
            },
        ]
    ).encode()


async def test_a_full_disk_never_stops_forwarding_and_capture_catches_up_when_space_returns(
    settings, small_disk, caplog
):
    """Disk full while the journal spills: every frame is still forwarded and answered; spilled
    events wait in memory up to the bound and the rest is counted lost; the failures are counted
    (capture failures metric, stage spill_write). With space back, the spill log is written and
    replayed: every event not counted lost is in the database. A shutdown on a full disk counts
    what it could not flush as lost, and does not raise."""
    options = {"max_buffered_bytes": 8 * 1024}  # about 20 of these events
    async with capture_proxy(
        settings, small_disk.path / "spill", spill_options=options, capacity=1
    ) as proxy:
        journal, stats = proxy.journal, proxy.journal.stats
        async with (
            healthy_charger(proxy) as healthy,
            hostile_charger(proxy, "BURST-1", "ocpp1.6") as charger,
        ):
            small_disk.fill()
            await charger.send_at_once([meter_values(n) for n in range(BURST)])
            assert [(await charger.answer())[:2] for _ in range(BURST)] == [
                [3, f"mv{n}"] for n in range(BURST)
            ]
            await healthy.check()
            with trio.fail_after(WAIT):
                while not stats.failures["spill_write"]:
                    await trio.sleep(0.02)
            assert journal.spilling and journal.spill_failing and 0 < stats.lost < BURST
            assert (
                proxy.metrics.registry.get_sample_value(
                    "ere_proxy_capture_failures_total", {"stage": "spill_write"}
                )
                >= 1
            )
            await healthy.check()

            small_disk.free()
            await proxy.settled()
            assert not journal.spill_failing
            assert stats.stored + stats.replayed + stats.lost == stats.submitted == BURST
            assert (
                await proxy.db.fetchval("SELECT count(*) FROM charger_events") == BURST - stats.lost
            )

            small_disk.fill()  # full again, and the worker stops while spilled events wait in memory
            lost_before = stats.lost
            await charger.send_at_once([meter_values(n) for n in range(BURST, BURST + 5)])
            for _ in range(5):
                await charger.answer()
            with trio.fail_after(WAIT):
                while not journal.spill_failing or journal.spill_unflushed == 0:
                    await trio.sleep(0.02)
            await healthy.check()
        stored = await proxy.db.fetchval("SELECT count(*) FROM charger_events")
    assert stats.lost > lost_before
    assert (
        stats.stored + stats.replayed + stats.lost
        == stats.submitted
        == BURST + 5
        == stored + stats.lost
    )
    assert any(
        r.getMessage() == "spill log cannot be written at shutdown: events lost"
        for r in caplog.records
    )
