"""Partner-registered upstreams against server-side request forgery, over real HTTP and a real
proxy: `POST /v1/chargers` refuses upstreams on private addresses (in any notation, or by a
name resolving there) and hosts off the operator's allow-list; the proxy resolves a partner's
upstream again at every dial and refuses to connect to a private address (DNS rebinding),
while operator-registered routes dial as before.

Names resolve through a fake resolver installed in the test's Trio run (`FakeDns`): the API,
the proxy and the charger all run in it, so a name can lead anywhere the test says, and change.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from proxy.api.keys import SCOPES
from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.routing.registry.records import add_charger
from proxy.routing.registry.router import DatabaseRouter
from proxy.runtime.config import (
    ApiSettings,
    Config,
    DatabaseSettings,
    ProxySettings,
    RegistrySettings,
    Route,
)
from proxy.runtime.metrics import ProxyMetrics
from proxy.store.db import Database
from testkit.partner_api import PROBLEM, call, idem, partner_with_key, serving_api
from testkit.raw_charger import RawCharger
from testkit.upstream import Upstream, serve_upstream

PUBLIC = "93.184.215.14"  # a globally routable address (nothing ever connects to it here)


class FakeDns(trio.abc.HostnameResolver):
    """Answers the names in `names` (name → IPv4 or IPv6 addresses); any other name does not
    resolve. Numeric hosts never reach a custom resolver (Trio answers them itself)."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    async def getaddrinfo(  # type: ignore[override]
        self, host: bytes | None, port: Any, family: int = 0, type: int = 0, *rest: Any
    ) -> list[Any]:
        name = (host or b"").decode().lower().rstrip(".")
        if name not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        number = int(port or 0)
        infos: list[Any] = []
        for address in self.names[name]:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, number, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, number)))
        return infos

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def register(port: int, key: str, identity: str, upstream: str):  # type: ignore[no-untyped-def]
    body = {"identity": identity, "upstream": upstream}
    return await call(port, "POST", "/v1/chargers", key=key, json_body=body, headers=idem())


def refused_upstream(reply) -> str:  # type: ignore[no-untyped-def]
    """The detail of a 422 naming `upstream`."""
    assert reply.status == 422, (reply.status, reply.body)
    assert reply.headers["content-type"] == PROBLEM
    problem = reply.json()
    assert [e["field"] for e in problem["errors"]] == ["upstream"], problem
    return str(problem["detail"])


PRIVATE_UPSTREAMS = [
    "ws://127.0.0.1:5432/ocpp",
    "ws://127.9.9.9/ocpp",
    "ws://10.0.0.5/ocpp",
    "wss://172.16.0.1/ocpp",
    "ws://192.168.1.1/ocpp",
    "ws://169.254.169.254/latest/meta-data",
    "ws://100.64.0.1/ocpp",  # shared address space (CGNAT)
    "ws://0.0.0.0/ocpp",
    "ws://224.0.0.1/ocpp",
    "ws://240.0.0.1/ocpp",  # reserved
    "ws://255.255.255.255/ocpp",
    "ws://192.0.2.10/ocpp",  # documentation
    "ws://198.51.100.7/ocpp",  # documentation
    "ws://[::1]/ocpp",
    "ws://[::]/ocpp",
    "ws://[fe80::1]/ocpp",
    "ws://[fe80::1%25eth0]/ocpp",
    "ws://[fc00::1]/ocpp",
    "ws://[2001:db8::1]/ocpp",  # documentation
    "ws://[::ffff:127.0.0.1]/ocpp",  # IPv4-mapped
    "ws://[::ffff:a9fe:a9fe]/ocpp",  # IPv4-mapped 169.254.169.254
    "ws://[64:ff9b::a00:5]/ocpp",  # NAT64 of 10.0.0.5
    "ws://[2002:7f00:1::1]/ocpp",  # 6to4 of 127.0.0.1
    "ws://2130706433/ocpp",  # 127.0.0.1 as one number
    "ws://0x7f000001/ocpp",
    "ws://0x7f.1/ocpp",
    "ws://017700000001/ocpp",  # octal
    "ws://127.1/ocpp",
    "ws://localhost:8080/ocpp",
    "ws://LOCALHOST./ocpp",
    "ws://db.localhost/ocpp",
    "ws://internal.test/ocpp",  # resolves to a private address
    "ws://mixed.test/ocpp",  # resolves to a public and a loopback address
    "ws://metadata.test/ocpp",  # resolves to a mapped link-local address
]


async def test_partner_upstreams_on_private_addresses_are_refused(
    settings: DatabaseSettings,
) -> None:
    trio.socket.set_custom_hostname_resolver(
        FakeDns(
            {
                "internal.test": ["10.0.0.5"],
                "mixed.test": [PUBLIC, "127.0.0.1"],
                "metadata.test": ["::ffff:169.254.169.254"],
                "csms.public.test": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
            }
        )
    )
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        for n, upstream in enumerate(PRIVATE_UPSTREAMS):
            detail = refused_upstream(await register(port, key, f"CP-{n}", upstream))
            assert "10.0.0.5" not in detail and "127.0.0.1" not in detail, (upstream, detail)
        assert await db.fetchval("SELECT count(*) FROM chargers") == 0
        # Public addresses, public names, and names that do not resolve (yet) are accepted:
        # the proxy resolves and checks them again at every dial.
        for n, upstream in enumerate(
            [
                "wss://csms.public.test/ocpp",
                "ws://8.8.8.8:8080/ocpp",
                "wss://[2001:4860:4860::8888]/ocpp",
                "wss://csms.example.com/ocpp",
                "wss://not-yet.example.net:8443/ocpp",
            ]
        ):
            reply = await register(port, key, f"CP-OK-{n}", upstream)
            assert reply.status == 201, (upstream, reply.body)
        assert await db.fetchval("SELECT count(*) FROM chargers") == 5


async def test_the_operators_allow_list_and_private_upstreams(settings: DatabaseSettings) -> None:
    trio.socket.set_custom_hostname_resolver(
        FakeDns({"ocpp.e-flux.nl": [PUBLIC], "csms.internal.e-flux.nl": ["10.1.2.3"]})
    )
    allowed = ("*.E-Flux.nl", "csms.example.com")
    async with serving_api(settings, partner_upstream_hosts=allowed) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        for n, upstream in enumerate(
            ["wss://ocpp.e-flux.nl/ocpp", "wss://OCPP.E-FLUX.NL./x", "wss://CSMS.example.com/ocpp"]
        ):
            reply = await register(port, key, f"CP-A{n}", upstream)
            assert reply.status == 201, (upstream, reply.body)
        for n, upstream in enumerate(
            [
                "wss://e-flux.nl/ocpp",
                "wss://csms.example.com.evil.net/ocpp",
                "wss://evil.net/e-flux.nl",
                "ws://8.8.8.8/ocpp",
            ]
        ):
            detail = refused_upstream(await register(port, key, f"CP-B{n}", upstream))
            assert "ask your operator" in detail and "e-flux" not in detail.lower(), detail
        # On the list, yet resolving to a private address: still refused.
        refused_upstream(await register(port, key, "CP-C", "wss://csms.internal.e-flux.nl/ocpp"))

    async with serving_api(settings, upstreams_allow_private=True) as (db, port):
        key = await partner_with_key(db, "bravo", SCOPES)
        for n, upstream in enumerate(
            ["ws://127.0.0.1:9000/ocpp", "ws://10.0.0.5/ocpp", "ws://localhost/ocpp"]
        ):
            reply = await register(port, key, f"CP-P{n}", upstream)
            assert reply.status == 201, (upstream, reply.body)
        for upstream in ("ws://224.0.0.1/ocpp", "ws://0.0.0.0/ocpp", "ws://[::]/ocpp"):
            refused_upstream(await register(port, key, "CP-Q", upstream))


# --- dial time ---


def proxy_config(*, allow_private: bool) -> Config:
    proxy = ProxySettings(
        host="127.0.0.1", port=0, handshake_timeout=5.0, dial_timeout=5.0, close_timeout=1.0
    )
    api = ApiSettings(upstreams_allow_private=True) if allow_private else ApiSettings()
    return Config(proxy=proxy, registry=RegistrySettings(refresh_interval=3600.0), api=api)


@asynccontextmanager
async def serving_proxy(db: Database, config: Config) -> AsyncIterator[int]:
    """A proxy on a free 127.0.0.1 port routing from the registry as it is now; yields the
    port."""
    router = DatabaseRouter(config, None)
    await router.reload(db)
    server = ProxyServer(config, router, ProxyMetrics())
    listener = open_listener(config.proxy, reuse_port=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run, [listener])
        try:
            yield listening_port(listener)
        finally:
            server.shutdown()


async def status_of(port: int, identity: str, password: str | None = None) -> bytes:
    """The status line the proxy answers a charger's upgrade request with."""
    extra = ""
    if password is not None:
        token = base64.b64encode(f"{identity}:{password}".encode()).decode()
        extra = f"Authorization: Basic {token}\r\n"
    charger = await RawCharger.connect(port)
    try:
        with trio.fail_after(10):
            head = await charger.upgrade(identity, extra)
    finally:
        await charger.aclose()
    return head.split(b"\r\n", 1)[0]


async def test_a_partner_upstream_that_rebinds_to_loopback_is_never_dialled(
    settings: DatabaseSettings,
) -> None:
    dns = FakeDns({"csms.rebind.test": [PUBLIC]})
    trio.socket.set_custom_hostname_resolver(dns)
    async with trio.open_nursery() as nursery:
        upstream: Upstream = await serve_upstream(nursery)
        async with serving_api(settings) as (db, port):
            key = await partner_with_key(db, "acme", SCOPES)
            url = f"ws://csms.rebind.test:{upstream.port}/ocpp"
            reply = await register(port, key, "CP-REBIND", url)
            assert reply.status == 201, reply.body
            password = reply.json()["password"]
            # The operator's own route to the same loopback upstream.
            operator = Route(upstream=f"ws://127.0.0.1:{upstream.port}/ocpp")
            await add_charger(db, "CP-OPERATOR", operator, keys=None)

            dns.names["csms.rebind.test"] = ["127.0.0.1"]  # the name now leads inside
            async with serving_proxy(db, proxy_config(allow_private=False)) as proxy_port:
                assert await status_of(proxy_port, "CP-REBIND", password) == (
                    b"HTTP/1.1 502 Bad Gateway"
                )
                assert upstream.peers == []  # nothing was sent there
                assert await status_of(proxy_port, "CP-OPERATOR") == (
                    b"HTTP/1.1 101 Switching Protocols"
                )
                assert [peer.path for peer in upstream.peers] == ["/ocpp/CP-OPERATOR"]
        nursery.cancel_scope.cancel()


async def test_private_partner_upstreams_are_dialled_only_when_the_operator_allows_them(
    settings: DatabaseSettings,
) -> None:
    trio.socket.set_custom_hostname_resolver(FakeDns({}))
    async with trio.open_nursery() as nursery:
        upstream = await serve_upstream(nursery)
        async with serving_api(settings, upstreams_allow_private=True) as (db, port):
            key = await partner_with_key(db, "acme", SCOPES)
            url = f"ws://127.0.0.1:{upstream.port}/ocpp"
            reply = await register(port, key, "CP-LOCAL", url)
            assert reply.status == 201, reply.body
            password = reply.json()["password"]
            async with serving_proxy(db, proxy_config(allow_private=False)) as proxy_port:
                status = await status_of(proxy_port, "CP-LOCAL", password)
                assert status == b"HTTP/1.1 502 Bad Gateway"
                assert upstream.peers == []
            async with serving_proxy(db, proxy_config(allow_private=True)) as proxy_port:
                status = await status_of(proxy_port, "CP-LOCAL", password)
                assert status == b"HTTP/1.1 101 Switching Protocols"
                assert [peer.path for peer in upstream.peers] == ["/ocpp/CP-LOCAL"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("allow_private", [False, True])
async def test_operator_routes_to_private_upstreams_dial_either_way(
    settings: DatabaseSettings, allow_private: bool
) -> None:
    async with trio.open_nursery() as nursery:
        upstream = await serve_upstream(nursery)
        async with serving_api(settings) as (db, _):
            operator = Route(upstream=f"ws://localhost:{upstream.port}/ocpp")
            await add_charger(db, "CP-OP", operator, keys=None)
            async with serving_proxy(db, proxy_config(allow_private=allow_private)) as proxy_port:
                status = await status_of(proxy_port, "CP-OP")
                assert status == b"HTTP/1.1 101 Switching Protocols"
        nursery.cancel_scope.cancel()


async def test_the_registry_marks_partner_routes_and_follows_a_reloaded_setting(
    settings: DatabaseSettings,
) -> None:
    async with serving_api(settings, upstreams_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        assert (await register(port, key, "CP-P", "ws://10.0.0.5/ocpp")).status == 201
        await add_charger(db, "CP-O", Route(upstream="ws://10.0.0.5/ocpp"), keys=None)
        router = DatabaseRouter(proxy_config(allow_private=False), None)
        await router.refresh(db)
        partner, operator = router.lookup("CP-P"), router.lookup("CP-O")
        assert partner is not None and partner.upstream_public_only
        assert operator is not None and not operator.upstream_public_only
        router.replace(proxy_config(allow_private=True))  # SIGHUP with the setting changed
        await router.refresh(db)
        partner = router.lookup("CP-P")
        assert partner is not None and not partner.upstream_public_only
