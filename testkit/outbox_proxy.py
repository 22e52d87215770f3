"""An in-process proxy with its outbox on a real PostgreSQL, and a back-office that answers like one.

Shared by the outbox tests: `Csms` (a trio-websocket back-office the tests start and stop, with
real transaction ids from 7001), `running_proxy`, and chargers that connect with a password.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, open_websocket_url, serve_websocket

from proxy.capture.journal import DatabaseStore, Journal
from proxy.capture.spill import SpillLog
from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.outbox.store import OutboxStore
from proxy.routing.auth import basic_header, hash_password
from proxy.routing.router import StaticRouter
from proxy.runtime.config import Config, OutboxSettings, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from proxy.store.db import Database, open_database
from tests.integration.conftest import Upstream

START = {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": "2026-11-21T10:00:00Z"}


class Csms(Upstream):
    """The upstream back-office: answers like one (real transaction ids from 7000), can be stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.answer_calls = False
        self.calls: list[
            tuple[str, str, dict[str, Any]]
        ] = []  # (identity, action, payload) answered
        self.errors_for: dict[str, int] = {}  # action → CALLERRORs to give before answering
        self.unanswered: set[str] = set()  # actions received (and recorded) but never answered
        self._next_id = 7000
        self._scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as self._scope:
                await serve_websocket(
                    self.answering, "127.0.0.1", self.port, None, task_status=task_status
                )

        server = await nursery.start(serve)
        self.port = server.port

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def answering(self, request) -> None:
        if self.refuse_with is not None:
            await request.reject(self.refuse_with, body=b"no")
            return
        ws = await request.accept(subprotocol=request.proposed_subprotocols[0])
        identity = request.path.rsplit("/", 1)[-1]
        self.connections[identity] = ws
        self._notify()
        try:
            while True:
                call = json.loads(await ws.get_message())
                if call[0] != 2:
                    continue
                _, unique_id, action, payload = call
                if action in self.unanswered:
                    self.calls.append((identity, action, payload))
                    self._notify()
                    continue
                if self.errors_for.get(action, 0) > 0:
                    self.errors_for[action] -= 1
                    await ws.send_message(
                        json.dumps([4, unique_id, "InternalError", "try later", {}])
                    )
                    continue
                answer: dict[str, Any] = {}
                if action == "StartTransaction":
                    self._next_id += 1
                    answer = {"transactionId": self._next_id, "idTagInfo": {"status": "Accepted"}}
                elif action == "Authorize":
                    answer = {
                        "idTagInfo": {
                            "status": "Blocked" if payload["idTag"] == "BAD" else "Accepted"
                        }
                    }
                elif action == "BootNotification":
                    answer = {
                        "status": "Accepted",
                        "currentTime": "2026-11-21T10:00:00Z",
                        "interval": 60,
                    }
                await ws.send_message(json.dumps([3, unique_id, answer]))
                self.calls.append((identity, action, payload))
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            if self.connections.get(identity) is ws:
                del self.connections[identity]
            self._notify()


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
async def running_proxy(settings, csms: Csms, tmp_path, route: Route | None = None, **outbox: Any):
    """A proxy with outbox (and capture) on the test database; yields (port, server, db).

    By default chargers are on a managed route (their password is what admits them while the
    back-office is down) and the back-office gets no credentials; `route` replaces it.
    """
    proxy = msgspec.convert(
        {"host": "127.0.0.1", "port": 0, "close_timeout": 1.0, "dial_timeout": 1.0}, ProxySettings
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


async def wait_for(condition, db: Database | None = None) -> None:
    """Poll `condition` (sync or async) until true, bounded: for state inside the proxy or the database."""
    with trio.fail_after(10):
        while True:
            value = condition()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await trio.sleep(0.01)
