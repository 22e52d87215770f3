"""Running several proxy worker processes on one port (SO_REUSEPORT).

The supervisor starts `workers` children (`ere-proxy proxy --worker-index i`), passes SIGHUP and
SIGTERM/SIGINT on to them, and restarts a child that dies on its own (after a second, so a child
that cannot start does not spin). It returns once every child has exited after a shutdown.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import trio

log = logging.getLogger("proxy.supervisor")

_RESTART_DELAY = 1.0


async def supervise(config_path: Path | None, workers: int) -> int:
    """Run the workers until a shutdown signal; returns the exit status for the supervisor."""
    stopping = False
    processes: dict[int, trio.Process] = {}

    def command(index: int) -> list[str]:
        argv = [sys.executable, "-m", "proxy", "proxy", "--worker-index", str(index), "--workers", str(workers)]
        if config_path is not None:
            argv += ["--config", str(config_path)]
        return argv

    async def keep_running(index: int) -> None:
        while not stopping:
            process = await trio.lowlevel.open_process(command(index), stdin=subprocess.DEVNULL)
            processes[index] = process
            status = await process.wait()
            if not stopping:
                log.error("worker exited; restarting", extra={"worker": index, "status": status})
                await trio.sleep(_RESTART_DELAY)

    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            for index in range(workers):
                nursery.start_soon(keep_running, index)
            async for signum in signals:
                for process in processes.values():
                    if process.returncode is None:
                        process.send_signal(signum)
                if signum != signal.SIGHUP:
                    stopping = True
                    break
    return 0
