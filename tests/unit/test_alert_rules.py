"""The alert and recording rules pass `promtool`, and their unit tests pass: each alert fires when
its condition holds (and for as long as it holds) and stays quiet under normal load.

The unit tests are grafana/tests/*_test.yml; this runs them all, so a rule changed without its
test (or a test that no longer matches its rule) fails here, not only in the end-to-end run.
promtool must be installed (`scripts/setup-debian`); without it the test fails, it never skips.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from testkit.grafana import GRAFANA


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run scripts/setup-debian")
    return subprocess.run(
        [binary, *args], cwd=GRAFANA, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_are_valid():
    checked = promtool("check", "rules", "recording.yml", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("path", sorted(p.name for p in (GRAFANA / "tests").glob("*_test.yml")))
def test_the_promtool_unit_tests_pass(path):
    tested = promtool("test", "rules", f"tests/{path}")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_broken_threshold_fails_its_unit_test(tmp_path):
    """The unit tests catch a rule that fires too early (a drop alert at 5 % instead of 25 %)."""
    rules = (GRAFANA / "alerts.yml").read_text()
    assert "< 0.75 * max_over_time" in rules
    (tmp_path / "alerts.yml").write_text(
        rules.replace("< 0.75 * max_over_time", "< 0.95 * max_over_time")
    )
    shutil.copy(GRAFANA / "recording.yml", tmp_path / "recording.yml")
    (tmp_path / "tests").mkdir()
    shutil.copy(GRAFANA / "tests" / "proxy_alerts_test.yml", tmp_path / "tests")
    binary = shutil.which("promtool")
    assert binary is not None
    tested = subprocess.run(
        [binary, "test", "rules", "tests/proxy_alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tested.returncode != 0 and "ChargersDisconnected" in tested.stdout + tested.stderr
