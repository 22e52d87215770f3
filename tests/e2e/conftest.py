"""Fixtures: the proxy process (see `proxy_process`), shared per module or owned by one test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.proxy_process import ProxyProcess, running_proxy


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, each_engine_per_module: str
) -> Iterator[ProxyProcess]:
    """One proxy process shared by the tests of a module, once per forwarding engine."""
    with running_proxy(tmp_path_factory.mktemp("proxy")) as running:
        yield running


@pytest.fixture
def own_proxy(tmp_path: Path, each_engine: str) -> Iterator[ProxyProcess]:
    """A proxy process for one test alone (e.g. one the test stops itself), per engine."""
    with running_proxy(tmp_path) as running:
        yield running
