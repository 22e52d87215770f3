"""Fixtures shared by every suite: the forwarding engine a suite runs on (see testkit.engines)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.engines import ENGINE_VARIABLE, ENGINES


@pytest.fixture(params=ENGINES)
def each_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once per forwarding engine (autouse it, or name it in `usefixtures`)."""
    monkeypatch.setenv(ENGINE_VARIABLE, request.param)
    return request.param


@pytest.fixture(scope="module", params=ENGINES)
def each_engine_per_module(request: pytest.FixtureRequest) -> Iterator[str]:
    """`each_engine` for modules whose proxy is shared by their tests (module-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENGINE_VARIABLE, request.param)
        yield request.param
