"""`ere-proxy run` on one machine: the proxy, an ERE worker and the partner API, on the embedded
PostgreSQL.

The accounting commands work against the running roles (a quarter closes through the worker),
bad input gets a clear error and exit status 2, and SIGTERM stops every role cleanly.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.ports import free_port
from testkit.postgres import make_data_dir
from testkit.proxy_process import CONFIG, REPO, log_problems, running_proxy

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-run-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--config", str(config)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ready(port: int) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}/readyz", timeout=2
        ) as response:
            return response.status == 200
    except OSError:
        return False


def serves_api(port: int) -> bool:
    """The partner API answers with its OpenAPI document."""
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}/v1/openapi.json", timeout=2
        ) as response:
            return response.status == 200 and b'"openapi"' in response.read()
    except OSError:
        return False


def test_run_serves_the_proxy_and_a_worker_that_closes_quarters(tmp_path, data_dir):
    worker_admin, api_port, api_admin = free_port(), free_port(), free_port()
    template = CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    template += (
        f'\n[database]\ndata_dir = "{data_dir}"\n'
        f"\n[ere]\nworkers = 1\nadmin_port = {worker_admin}\npoll_interval = 0.2\n"
        f'\n[api]\nenabled = true\nhost = "127.0.0.1"\nport = {api_port}\nadmin_port = {api_admin}\n'
    )
    with running_proxy(tmp_path, template, args=()) as proxy:
        pass  # the proxy role alone starts and stops cleanly on this configuration
    config = tmp_path / "proxy.toml"
    with (tmp_path / "run.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 120
        while not (
            ready(proxy.admin_port)
            and ready(worker_admin)
            and serves_api(api_port)
            and ready(api_admin)
        ):
            assert process.poll() is None, (tmp_path / "run.stderr").read_text()
            assert time.monotonic() < deadline, "the roles did not get ready"
            time.sleep(0.1)

        bad = cli(config, "quarter", "close", "2026Q5")
        assert bad.returncode == 2 and "2026Q5" in bad.stderr and "Traceback" not in bad.stderr
        closed = cli(config, "quarter", "close", "2026Q3", "--wait")
        assert closed.returncode == 0, closed.stderr
        assert "2026Q3 closed" in closed.stdout
        again = cli(config, "quarter", "close", "2026Q3")
        assert again.returncode == 2 and "already closed" in again.stderr
        status = cli(config, "quarter", "status", "--json")
        assert status.returncode == 0 and '"state": "closed"' in status.stdout
    finally:
        process.terminate()
        status_code = process.wait(60)
    assert status_code == 0
    assert log_problems((tmp_path / "run.stderr").read_text()) == []
