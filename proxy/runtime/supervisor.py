"""Running the roles of one machine as child processes: proxy workers and ERE workers.

The supervisor starts `proxy_workers` proxy children on one port (`ere-proxy proxy
--worker-index i`, SO_REUSEPORT), `ere_workers` ERE job workers (`ere-proxy worker
--worker-index i`) and, with `api`, the partner API (`ere-proxy api --worker-index 0`), passes
SIGHUP and SIGTERM/SIGINT on to them, and restarts a child that dies on its own (after a
second). It returns once every child has exited after a shutdown, or with
status 1 when a child keeps failing to start.

Each child runs in a session of its own, so a signal sent to the supervisor's process group (Ctrl-C
in a terminal) reaches the children once, passed on by the supervisor: a second one would make an
ERE worker abandon its job, and a proxy worker end with a traceback after its graceful stop.
Each child also holds the reading end of a pipe whose writing end only the supervisor has: when
the supervisor dies, however it dies (SIGKILL, the OOM killer), the pipe reads end-of-file and
the child stops gracefully (`end_with_supervisor`), so no worker is left behind serving the port,
with its old configuration, beside the next instance's.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import trio

from proxy.runtime.config import EXIT_CANNOT_START

log = logging.getLogger("proxy.supervisor")

_LIFELINE = "ERE_PROXY_LIFELINE"  # set for the children: the pipe that ends with the supervisor
_RESTART_DELAY = 1.0
_QUICK_EXIT = 5.0  # a worker that exits sooner than this after starting failed to start
_MAX_QUICK_FAILURES = 5


async def supervise(
    config_path: Path | None, proxy_workers: int, ere_workers: int = 0, api: bool = False
) -> int:
    """Run the workers until a shutdown signal; returns the exit status for the supervisor.

    A worker that keeps dying right after it starts (say, its port is taken) makes the
    supervisor stop the others and exit with status 1 rather than restart it forever.
    """
    stopping = trio.Event()
    failed = False
    processes: dict[tuple[str, int], trio.Process] = {}
    # The children's lifeline: its writing end never leaves this process (pipes are not inherited).
    lifeline, lifeline_end = os.pipe()

    def command(role: str, index: int) -> list[str]:
        argv = [sys.executable, "-m", "proxy", role, "--worker-index", str(index)]
        if role == "proxy":
            argv += ["--workers", str(proxy_workers)]
        if config_path is not None:
            argv += ["--config", str(config_path)]
        return argv

    def signal_all(signum: int) -> None:
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signum)

    def give_up(message: str, role: str, index: int, cancel_scope: trio.CancelScope) -> None:
        """Stop every worker and the supervisor, which then exits with status 1."""
        nonlocal failed
        log.error(message, extra={"role": role, "worker": index})
        stopping.set()
        failed = True
        signal_all(signal.SIGTERM)
        cancel_scope.cancel()

    async def keep_running(role: str, index: int, cancel_scope: trio.CancelScope) -> None:
        quick_failures = 0
        while not stopping.is_set():
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                command(role, index),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, _LIFELINE: str(lifeline)},
                pass_fds=(lifeline,),
            )
            processes[role, index] = process
            if stopping.is_set():  # the shutdown signal came while this worker was being started
                process.send_signal(signal.SIGTERM)
            status = await process.wait()
            if stopping.is_set():
                return
            if status == EXIT_CANNOT_START:  # it said why; it would only fail again
                give_up("worker cannot start; stopping", role, index, cancel_scope)
                return
            quick_failures = (
                quick_failures + 1 if trio.current_time() - started < _QUICK_EXIT else 0
            )
            if quick_failures >= _MAX_QUICK_FAILURES:
                give_up("worker keeps failing at start; stopping", role, index, cancel_scope)
                return
            log.error(
                "worker exited; restarting", extra={"role": role, "worker": index, "status": status}
            )
            await trio.sleep(_RESTART_DELAY)

    try:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as listening:
                    roles = (("proxy", proxy_workers), ("worker", ere_workers), ("api", int(api)))
                    for role, count in roles:
                        for index in range(count):
                            nursery.start_soon(keep_running, role, index, listening)
                    async for signum in signals:
                        signal_all(signum)
                        if signum != signal.SIGHUP:
                            stopping.set()
                            break
    finally:
        os.close(lifeline)
        os.close(lifeline_end)
    return 1 if failed else 0


def end_with_supervisor() -> None:
    """In a child the supervisor started: SIGTERM to itself (a graceful stop) once the supervisor
    is gone, told by end-of-file on the lifeline, watched by a daemon thread. Outside a
    supervisor, nothing happens."""
    lifeline = os.environ.pop(_LIFELINE, None)
    if lifeline is None:
        return

    def watch(fd: int) -> None:
        try:
            while os.read(fd, 1):  # nothing is ever written: only end-of-file comes
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, args=(int(lifeline),), name="lifeline", daemon=True).start()
