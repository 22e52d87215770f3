"""A CPO's platform for the OCPI tests, written from the OCPI 2.2.1 specification.

`OcpiClient` makes a platform's calls to our OCPI endpoints as the spec has them made:
`Authorization: Token <base64 of the token>`, a fresh `X-Request-ID` and `X-Correlation-ID`,
`Content-Type: application/json` with a body, and for the functional modules (CDRs, Sessions)
the routing headers `OCPI-from-*` (the CPO) and `OCPI-to-*` (us). `discover` walks from the
versions URL to 2.2.1's endpoints; `body_of` checks an answer is in the response format.

`serving_platform` runs the platform's own side on a free port: the versions and version
details endpoints the registration fetches with token B (anything else is 404, any other token
401), and records each request it got. `register` is the handshake as the spec orders it:
versions and details with token A, then POST of the platform's credentials, whose answer
carries token C; it returns a client calling with token C.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from testkit.ocpi_samples import credentials
from testkit.partner_api import Reply, call
from testkit.ports import free_port

OURS = ("NL", "ERE")  # the country code and party id `[api.ocpi]` names by default
CPO = ("BE", "BEC")  # the CPO of the specification's CDR example
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z?")


def token_header(token: str) -> str:
    """`Authorization` as OCPI 2.2.1 writes it."""
    return "Token " + base64.b64encode(token.encode()).decode()


def body_of(reply: Reply, http_status: int = 200, status_code: int | None = 1000) -> dict[str, Any]:
    """The response object of an OCPI answer, checked: JSON, `status_code` and `timestamp`
    present and well-formed, the HTTP status and (unless None) the OCPI status as given."""
    assert reply.status == http_status, (reply.status, reply.body)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body: dict[str, Any] = reply.json()
    assert isinstance(body["status_code"], int), body
    assert _TIMESTAMP.fullmatch(body["timestamp"]), body
    if status_code is not None:
        assert body["status_code"] == status_code, body
    if "status_message" in body:
        assert isinstance(body["status_message"], str)
    return body


@dataclass
class OcpiClient:
    """A platform calling us with `token` (see the module docstring)."""

    port: int
    token: str | None
    party: tuple[str, str] = CPO
    endpoints: dict[str, str] = field(default_factory=dict)

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        routed: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One call to `url` (absolute, or a path); `body` as JSON or `raw` as given."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sent = {"x-request-id": str(uuid.uuid4()), "x-correlation-id": str(uuid.uuid4())}
        if self.token is not None:
            sent["authorization"] = token_header(self.token)
        if routed and "/credentials" not in parts.path and not parts.path.endswith("versions"):
            sent |= {
                "ocpi-from-country-code": self.party[0],
                "ocpi-from-party-id": self.party[1],
                "ocpi-to-country-code": OURS[0],
                "ocpi-to-party-id": OURS[1],
            }
        if body is not None:
            raw = json.dumps(body).encode()
        if raw is not None:
            sent["content-type"] = "application/json"
        sent |= headers or {}
        reply = await call(self.port, method, target, body=raw, headers=sent)
        assert reply.headers.get("x-request-id") == sent["x-request-id"], reply.headers
        assert reply.headers.get("x-correlation-id") == sent["x-correlation-id"], reply.headers
        return reply

    async def discover(self, versions_url: str) -> dict[str, str]:
        """2.2.1's endpoints by module, found from our versions URL."""
        versions = body_of(await self.request("GET", versions_url))["data"]
        (details_url,) = [v["url"] for v in versions if v["version"] == "2.2.1"]
        details = body_of(await self.request("GET", details_url))["data"]
        assert details["version"] == "2.2.1"
        self.endpoints = {e["identifier"]: e["url"] for e in details["endpoints"]}
        return self.endpoints

    def url(self, module: str, *segments: str) -> str:
        return "/".join([self.endpoints[module], *segments])

    async def push_cdr(self, cdr: Any, **options: Any) -> Reply:
        return await self.request("POST", self.url("cdrs"), cdr, **options)


@dataclass
class FakePlatform:
    """The platform's own versions endpoints (see the module docstring)."""

    port: int
    token_b: str
    versions: tuple[str, ...] = ("2.2.1",)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/ocpi/cpo"

    @property
    def versions_url(self) -> str:
        return f"{self.base}/versions"

    def _answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        stamp = "2026-01-01T00:00:00Z"
        if authorization != token_header(self.token_b):
            return 401, {"status_code": 2000, "status_message": "unknown token", "timestamp": stamp}
        if path == "/ocpi/cpo/versions":
            data: Any = [{"version": v, "url": f"{self.base}/{v}"} for v in self.versions]
        elif path == "/ocpi/cpo/2.2.1" and "2.2.1" in self.versions:
            modules = [("credentials", "SENDER"), ("cdrs", "SENDER"), ("sessions", "SENDER")]
            data = {
                "version": "2.2.1",
                "endpoints": [
                    {"identifier": m, "role": r, "url": f"{self.base}/2.2.1/{m}"}
                    for m, r in modules
                ],
            }
        else:
            return 404, {"status_code": 2000, "timestamp": stamp}
        return 200, {"data": data, "status_code": 1000, "timestamp": stamp}

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        authorization = headers.get("authorization")
        self.requests.append((scope["method"], scope["path"], authorization))
        status, body = self._answer(scope["path"], authorization)
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def serving_platform(token_b: str, **options: Any) -> AsyncIterator[FakePlatform]:
    """A `FakePlatform` served on 127.0.0.1 until the block ends."""
    platform = FakePlatform(free_port(), token_b, **options)
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{platform.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("testkit.ocpi_platform")
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        app: Any = platform.app  # a plain ASGI callable; hypercorn's types are narrower
        await nursery.start(functools.partial(serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield platform
        finally:
            stop.set()


async def register(
    port: int, token_a: str, platform: FakePlatform, *roles: tuple[str, str, str]
) -> OcpiClient:
    """The registration as the spec orders it (see the module docstring); a client with token
    C. `roles` default to the CPO BE/BEC."""
    client = OcpiClient(port, token_a)
    endpoints = await client.discover(f"http://127.0.0.1:{port}/ocpi/versions")
    offered = credentials(platform.token_b, platform.versions_url, *roles)
    reply = await client.request("POST", endpoints["credentials"], offered)
    ours = body_of(reply)["data"]
    assert ours["url"] == f"http://127.0.0.1:{port}/ocpi/versions"
    assert ours["token"] != token_a and 0 < len(ours["token"]) <= 64
    return OcpiClient(port, ours["token"], endpoints=endpoints)
