"""The fleet simulator (`bench.load.simulator`) as a process of its own, with its files in one place.

Its JSON summary goes to `sim.json`, its progress lines to `sim.stderr`, and with `logs` its sent
log and connect log to `sent.json` and `connect.csv`, all in `directory`.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.proxy_process import REPO


@dataclass
class SimulatorProcess:
    """A running simulator and where its files are."""

    process: subprocess.Popen[bytes]
    directory: Path

    def wait(self, limit: float) -> None:
        """Wait up to `limit` seconds for it to exit 0 (AssertionError with its stderr otherwise)."""
        status = self.process.wait(limit)
        assert status == 0, (self.directory / "sim.stderr").read_text()

    def stop(self) -> None:
        """Kill it if it is still running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.directory / "sim.json").read_text())

    def sent(self) -> dict[str, Any]:
        return json.loads((self.directory / "sent.json").read_text())

    def connections(self) -> list[dict[str, str]]:
        """Rows of the connect log: identity, first_try_epoch, connected_epoch, attempts, failures."""
        with (self.directory / "connect.csv").open() as file:
            return list(csv.DictReader(file))


def start_simulator(directory: Path, url: str, *options: str) -> SimulatorProcess:
    """Run `python -m bench.load.simulator --url URL OPTIONS` with its sent and connect logs."""
    argv = [sys.executable, "-m", "bench.load.simulator", "--url", url, *options]
    argv += ["--sent-log", str(directory / "sent.json")]
    argv += ["--connect-log", str(directory / "connect.csv")]
    with (directory / "sim.json").open("wb") as out, (directory / "sim.stderr").open("wb") as err:
        process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return SimulatorProcess(process, directory)
