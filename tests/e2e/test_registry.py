"""The charger registry end to end: `ere-proxy chargers add` issues credentials in the database,
and a running proxy admits the charger with them (and nobody else)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.postgres import make_data_dir
from testkit.proxy_process import CONFIG, REPO, ProxyProcess, running_proxy, upgrade_status


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-registry-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def registry_config(data_dir: Path) -> str:
    # No TOML routes at all: every route comes from the database.
    template = CONFIG[: CONFIG.index('[chargers."CP-16"]')]
    template = template.replace(
        "[registry]\nenabled = false\n", "[registry]\nenabled = true\nrefresh_interval = 0.2\n"
    )
    return template + f'\n[database]\ndata_dir = "{data_dir}"\n'


def chargers(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "chargers", *args, "--config", str(config)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def basic(identity: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{identity}:{password}".encode()).decode()


def status_with(proxy: ProxyProcess, identity: str, authorization: str) -> bytes:
    return upgrade_status(proxy, identity, f"Authorization: {authorization}\r\n")


def test_a_charger_added_with_the_cli_is_admitted_with_its_issued_password(
    tmp_path: Path, data_dir: Path
) -> None:
    with running_proxy(tmp_path, registry_config(data_dir)) as proxy:
        config = tmp_path / "proxy.toml"
        added = chargers(
            config,
            "add",
            "CP-REG",
            "--upstream",
            f"ws://127.0.0.1:{proxy.upstream_port}/ocpp",
            "--managed",
            "--json",
        )
        assert added.returncode == 0, added.stderr
        issued = json.loads(added.stdout)
        # the proxy listens on 127.0.0.1 and has no public_url: no URL a charger could use
        assert issued["ocpp_url"] is None and "public_url is not set" in added.stderr
        password = issued["password"]
        listed = chargers(config, "list", "--json")
        assert password not in listed.stdout and "CP-REG" in listed.stdout

        def admitted() -> bytes:
            # Routed and authenticated: the dial then fails (no upstream here) with 502.
            return status_with(proxy, "CP-REG", basic("CP-REG", password))

        def eventually(expected: bytes) -> bytes:
            """Poll (bounded): the proxy picks registry changes up within its refresh interval."""
            for _ in range(200):
                status = admitted()
                if status == expected:
                    break
                time.sleep(0.05)
            return status

        assert eventually(b"HTTP/1.1 502 Bad Gateway") == b"HTTP/1.1 502 Bad Gateway"
        assert (
            status_with(proxy, "CP-REG", basic("CP-REG", "wrong")) == b"HTTP/1.1 401 Unauthorized"
        )
        assert upgrade_status(proxy, "CP-OTHER") == b"HTTP/1.1 404 Not Found"

        assert chargers(config, "remove", "CP-REG").returncode == 0
        assert eventually(b"HTTP/1.1 404 Not Found") == b"HTTP/1.1 404 Not Found"
