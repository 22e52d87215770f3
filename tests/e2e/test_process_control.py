"""The proxy as operators run it: SIGHUP reloads routes, --workers N shares one port."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from testkit.proxy_process import CONFIG, ProxyProcess, running_proxy, upgrade_status

# Only CP-16 is routed at first; the reload adds CP-new.
ONLY_CP16 = CONFIG[: CONFIG.index("[default_route]")]


def test_sighup_reloads_routes_and_a_bad_file_keeps_the_old_ones(tmp_path: Path):
    with running_proxy(tmp_path, ONLY_CP16, expected_errors=("reload failed",)) as proxy:
        assert upgrade_status(proxy, "CP-new") == b"HTTP/1.1 404 Not Found"
        config = tmp_path / "proxy.toml"
        text = config.read_text()
        config.write_text(
            text
            + f'\n[chargers."CP-new"]\nupstream = "ws://127.0.0.1:{proxy.upstream_port}/ocpp"\n'
        )
        proxy.process.send_signal(signal.SIGHUP)
        # Routed now; nothing listens upstream, so the dial fails with 502 instead of 404.
        assert _eventually(lambda: upgrade_status(proxy, "CP-new") == b"HTTP/1.1 502 Bad Gateway")
        config.write_text("this is [not toml")
        proxy.process.send_signal(signal.SIGHUP)
        assert _eventually(lambda: "reload failed" in proxy.stderr())
        assert upgrade_status(proxy, "CP-new") == b"HTTP/1.1 502 Bad Gateway"


def test_workers_share_the_port_and_stop_together(tmp_path: Path):
    template = ONLY_CP16.replace('path_prefix = "/ocpp"', 'path_prefix = "/ocpp"\nworkers = 2')
    with running_proxy(tmp_path, template) as proxy:
        second = ProxyProcess(
            proxy.port, proxy.admin_port + 1, proxy.upstream_port, proxy.process, proxy.stderr_path
        )
        assert _eventually(lambda: _ready(second))
        statuses = {upgrade_status(proxy, "CP-16") for _ in range(20)}
        assert statuses == {b"HTTP/1.1 502 Bad Gateway"}
    workers = {
        line.split('"worker":')[1].split(",")[0].strip("}")
        for line in proxy.stderr().splitlines()
        if '"worker":' in line
    }
    assert workers >= {"0", "1"}


def _ready(proxy: ProxyProcess) -> bool:
    try:
        return proxy.admin_get("/readyz")[0] == 200
    except OSError:
        return False


def _eventually(check, attempts: int = 200) -> bool:
    """Poll `check` (bounded) for a state change made by another process."""
    for _ in range(attempts):
        if check():
            return True
        time.sleep(0.05)
    return False
