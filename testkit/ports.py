"""Free TCP ports on 127.0.0.1 (free a moment ago: another process may still take one)."""

from __future__ import annotations

import socket


def free_port(consecutive: int = 1) -> int:
    """A port that was free a moment ago, with the `consecutive - 1` after it."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + consecutive <= 65536 and all(bindable(port + i) for i in range(1, consecutive)):
            return port


def bindable(port: int) -> bool:
    """Whether `port` can be bound on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
