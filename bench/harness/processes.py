"""The helper processes a scenario starts: each dies with the bench, and may hold many sockets."""

from __future__ import annotations

import resource
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child when the parent dies (no orphaned load)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


def spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """Start a helper process that dies with this one."""
    return subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)


def stop(proc: subprocess.Popen, grace: float = 20.0) -> int:
    """SIGTERM (unless it already exited), `grace` seconds, then SIGKILL; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def raise_fd_limit() -> None:
    """Soft open-file limit up to the hard one (inherited by every process a scenario starts)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
