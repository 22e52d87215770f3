"""An in-process proxy with its outbox (and capture) on a real PostgreSQL, in front of a `Csms`.

`running_proxy` serves chargers on a managed route: the password `connect` and `raw_credentials`
send is what admits them while the back-office (`testkit.upstream.Csms`) is down.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
from trio_websocket import open_websocket_url

from proxy.capture.journal import DatabaseStore, Journal
from proxy.capture.spill import SpillLog
from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.outbox.store import OutboxStore
from proxy.routing.auth import basic_header, hash_password
from proxy.routing.router import StaticRouter
from proxy.runtime.config import Config, OutboxSettings, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from proxy.store.db import open_database
from testkit.engines import engine_under_test
from testkit.upstream import Csms

START = {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": "2026-11-21T10:00:00Z"}
PASSWORD = "charger-secret"
PASSWORD_HASH = hash_password(PASSWORD)


def credentials(identity: str) -> list[tuple[str, str]]:
    """The Basic header of a charger on the managed route `running_proxy` serves."""
    return [("Authorization", basic_header(identity, PASSWORD).decode())]


def connect(port: int, identity: str):
    """A trio-websocket charger speaking 1.6 with its password (it may be admitted offline)."""
    return open_websocket_url(
        f"ws://127.0.0.1:{port}/ocpp/{identity}",
        subprotocols=["ocpp1.6"],
        extra_headers=credentials(identity),
    )


def raw_credentials(identity: str) -> str:
    return f"Authorization: {basic_header(identity, PASSWORD).decode()}\r\n"


@asynccontextmanager
async def running_proxy(
    settings,
    csms: Csms,
    tmp_path,
    route: Route | None = None,
    *,
    capture_stored: bool = True,
    **outbox: Any,
):
    """A proxy with outbox (and capture) on the test database; yields (port, server, db).

    By default chargers are on a managed route (their password is what admits them while the
    back-office is down) and the back-office gets no credentials; `route` replaces it.
    `capture_stored=False`: its journal never stores a captured event (they go with the proxy,
    as with a worker killed before its journal wrote them).
    """
    proxy = msgspec.convert(
        {
            "host": "127.0.0.1",
            "port": 0,
            "close_timeout": 1.0,
            "dial_timeout": 1.0,
            "engine": engine_under_test(),
        },
        ProxySettings,
    )
    outbox_settings = msgspec.convert(
        {"redial_min": 0.05, "redial_max": 0.2, "retry_interval": 0.05, **outbox}, OutboxSettings
    )
    route = route or Route(
        upstream=f"ws://127.0.0.1:{csms.port}/ocpp", auth="managed", password_hash=PASSWORD_HASH
    )
    config = Config(proxy=proxy, outbox=outbox_settings, default_route=route)
    async with open_database(settings) as db:
        spill = SpillLog(tmp_path / "spill")
        journal = Journal(spill)
        store = OutboxStore(db, config.outbox, refresh_interval=0.1)
        server = ProxyServer(config, StaticRouter(config), ProxyMetrics(), journal, store)
        listener = open_listener(config.proxy, reuse_port=False)
        try:
            async with trio.open_nursery() as nursery:
                if capture_stored:
                    await nursery.start(journal.run, DatabaseStore(db))
                await nursery.start(store.run)
                await nursery.start(server.run, [listener])
                yield listening_port(listener), server, db
                server.shutdown()
                await server.stopped.wait()
                nursery.cancel_scope.cancel()
        finally:
            spill.close()


async def call(ws, unique_id: str, action: str, payload: dict[str, Any]) -> Any:
    await ws.send_message(json.dumps([2, unique_id, action, payload]))
    with trio.fail_after(10):
        while True:
            message = json.loads(await ws.get_message())
            if message[0] in (3, 4) and message[1] == unique_id:
                return message
