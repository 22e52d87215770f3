"""Starting and stopping as a new operator does: what the start-up log says, one clear line when
the proxy cannot start (no configuration file, the data directory in use), and Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.ports import free_port
from testkit.postgres import make_data_dir
from testkit.proxy_process import (
    CONFIG,
    REPO,
    ProxyProcess,
    log_problems,
    running_proxy,
    wait_ready,
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-startup-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def with_capture(data_dir: Path) -> str:
    """The test configuration with session capture on, into the embedded server of `data_dir`."""
    template = CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    return template + f'\n[database]\ndata_dir = "{data_dir}"\n'


def ere_proxy(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *argv],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def records(stderr: str, message: str) -> list[dict]:
    return [r for r in map(json.loads, stderr.splitlines()) if r["msg"] == message]


def test_the_start_up_log_names_the_config_file_the_database_and_the_ports(
    tmp_path: Path, data_dir: Path
) -> None:
    with running_proxy(tmp_path, with_capture(data_dir)) as proxy:
        pass
    [starting] = records(proxy.stderr(), "ere-proxy starting")
    assert starting["config"] == str(tmp_path / "proxy.toml")
    assert starting["data_dir"] == str(data_dir)
    assert starting["database"] == (
        f"embedded PostgreSQL in {data_dir}/postgres (database ere_proxy, user postgres)"
    )
    [listening] = records(proxy.stderr(), "proxy listening")
    assert (listening["host"], listening["port"]) == ("127.0.0.1", proxy.port)
    assert listening["metrics"] == f"http://127.0.0.1:{proxy.admin_port}/metrics"


def test_a_second_instance_on_the_same_data_dir_exits_with_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    with running_proxy(tmp_path, with_capture(data_dir)) as first:
        second = tmp_path / "second.toml"  # other ports, the same data directory
        ports = {"port": free_port(), "admin_port": free_port(), "upstream_port": free_port()}
        second.write_text(with_capture(data_dir).format(**ports))
        for command in ("run", "proxy"):
            result = ere_proxy(command, "--config", str(second))
            assert (result.returncode, result.stdout) == (1, ""), result.stderr
            assert result.stderr == (
                f"ere-proxy: another ere-proxy (pid {first.process.pid}) is already running on "
                f"data directory {data_dir}; stop it first, or give this one a [database] "
                "data_dir of its own\n"
            )
        assert first.process.poll() is None


@pytest.mark.parametrize("command", ["run", "proxy", "worker"])
def test_serving_without_a_configuration_file_exits_with_one_line(command: str) -> None:
    env = {key: value for key, value in os.environ.items() if key != "ERE_PROXY_CONFIG"}
    result = ere_proxy(command, env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"ere-proxy: {command} needs a configuration file: --config FILE or ERE_PROXY_CONFIG "
        "(examples/proxy.toml documents every setting)\n"
    )


def two_workers(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`proxy --workers 2` (a supervisor and two workers) in a process group of its own, as a
    terminal's job, once both workers are ready; the process and the file of its stderr."""
    admin_port, port, upstream_port = free_port(consecutive=2), free_port(), free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(CONFIG.format(port=port, admin_port=admin_port, upstream_port=upstream_port))
    stderr_path = tmp_path / "proxy.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "proxy", "--workers", "2", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        for worker in range(2):
            wait_ready(ProxyProcess(port, admin_port + worker, upstream_port, process, stderr_path))
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process, stderr_path


def test_ctrl_c_stops_every_worker_without_a_traceback(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to the whole process group: the supervisor and its workers."""
    process, stderr_path = two_workers(tmp_path)
    try:
        os.killpg(process.pid, signal.SIGINT)
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = stderr_path.read_text()
    assert status == 0, output
    assert log_problems(output) == [], output
    assert len(records(output, "proxy stopped")) == 2


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` is alive (a zombie waiting for its new parent to reap it is not)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_stop_when_their_supervisor_is_killed_outright(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) ends the supervisor without a word to its workers; they see
    their lifeline end and stop gracefully, rather than serve the port on with an old config."""
    process, stderr_path = two_workers(tmp_path)
    workers: list[int] = []
    try:
        workers = children_of(process.pid)
        assert len(workers) == 2
        process.kill()
        process.wait()
        deadline = time.monotonic() + 30
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if running(pid)]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    assert len(records(stderr_path.read_text(), "proxy stopped")) == 2


@pytest.mark.parametrize(
    ("taken", "workers", "status"),
    [("charger", 1, 3), ("metrics", 1, 3), ("charger", 2, 1)],
)
def test_a_port_in_use_ends_the_start_with_one_line_and_no_restarts(
    tmp_path: Path, taken: str, workers: int, status: int
) -> None:
    """Exit 3 from a worker that cannot bind; a supervisor (2 workers) stops at once, exit 1."""
    admin_port, port, upstream_port = free_port(consecutive=2), free_port(), free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(CONFIG.format(port=port, admin_port=admin_port, upstream_port=upstream_port))
    holder = socket.socket()  # no SO_REUSEPORT: nobody else may bind the port
    holder.bind(("127.0.0.1", port if taken == "charger" else admin_port))
    holder.listen()
    try:
        result = ere_proxy("proxy", "--workers", str(workers), "--config", str(config))
    finally:
        holder.close()
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    failures = records(result.stderr, "cannot start")
    what = f"for chargers on 127.0.0.1:{port}" if taken == "charger" else "metrics on 127.0.0.1"
    assert 1 <= len(failures) <= workers
    assert all(what in f["reason"] and "in use" in f["reason"] for f in failures)
    assert not records(result.stderr, "worker exited; restarting")
