"""Fixtures: an in-process proxy on real 127.0.0.1 sockets, a trio-websocket upstream, and raw
chargers (see `testkit.in_process_proxy`, `testkit.upstream`, `testkit.raw_charger`)."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import open_websocket_url

from testkit.in_process_proxy import proxy_config, roundtrip, start_proxy
from testkit.raw_charger import RawCharger
from testkit.upstream import serve_upstream


@pytest.fixture(autouse=True)
def _on_each_engine(each_engine: str) -> str:
    """Every test here runs on both forwarding engines."""
    return each_engine


@pytest.fixture
async def upstream(nursery):
    return await serve_upstream(nursery)


@pytest.fixture
async def proxy(nursery, upstream):
    return await start_proxy(nursery, proxy_config(upstream.port))


@pytest.fixture
async def raw(proxy):
    """Opens raw chargers to the proxy and closes them all at teardown, whatever the test did."""
    opened: list[RawCharger] = []

    async def connect(port: int | None = None) -> RawCharger:
        charger = await RawCharger.connect(port or proxy.port)
        opened.append(charger)
        return charger

    yield connect
    for charger in opened:
        await charger.aclose()


@pytest.fixture
async def healthy(nursery, proxy):
    """A well-behaved charger kept connected through a test; `check()` proves it still works."""

    class Healthy:
        count = 0

        async def check(self) -> None:
            self.count += 1
            answer = json.loads(await roundtrip(self.ws, f"h{self.count}"))
            assert answer == [3, f"h{self.count}", {"echo": "Heartbeat"}]

    h = Healthy()
    ready = trio.Event()
    done = trio.Event()

    async def run() -> None:
        async with open_websocket_url(proxy.url("healthy"), subprotocols=["ocpp1.6"]) as ws:
            h.ws = ws
            ready.set()
            await done.wait()

    nursery.start_soon(run)
    await ready.wait()
    await h.check()
    yield h
    await h.check()
    done.set()
