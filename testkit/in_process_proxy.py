"""The proxy in this process on real 127.0.0.1 sockets: started in a nursery, configured in code.

`proxy_config` routes every charger (or the ones given) to an upstream port with short timeouts;
`start_proxy` runs a `ProxyServer` on a free port; `metric` reads its Prometheus registry and
`roundtrip` sends a Heartbeat through a trio-websocket charger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgspec
import trio

from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.config import Config, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from testkit.engines import engine_under_test


@dataclass
class ProxyHandle:
    server: ProxyServer
    router: StaticRouter
    metrics: ProxyMetrics
    port: int

    def url(self, identity: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{identity}"


async def start_proxy(nursery: trio.Nursery, config: Config) -> ProxyHandle:
    metrics = ProxyMetrics()
    router = StaticRouter(config)
    server = ProxyServer(config, router, metrics)
    listener = open_listener(config.proxy, reuse_port=False)
    await nursery.start(server.run, [listener])
    return ProxyHandle(server, router, metrics, listening_port(listener))


def proxy_config(
    upstream_port: int,
    *,
    chargers: dict[str, Route] | None = None,
    default: bool = True,
    **settings,
) -> Config:
    base = {
        "host": "127.0.0.1",
        "port": 0,
        "handshake_timeout": 2.0,
        "dial_timeout": 2.0,
        "close_timeout": 1.0,
        "engine": engine_under_test(),
    }
    base.update(settings)
    route = Route(upstream=f"ws://127.0.0.1:{upstream_port}/ocpp")
    return Config(
        proxy=msgspec.convert(base, ProxySettings),
        default_route=route if default else None,
        chargers=chargers or {},
    )


def metric(handle: ProxyHandle, name: str, **labels: str) -> float:
    value = handle.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def roundtrip(ws, unique_id: str) -> str:
    await ws.send_message(json.dumps([2, unique_id, "Heartbeat", {}]))
    return await ws.get_message()
