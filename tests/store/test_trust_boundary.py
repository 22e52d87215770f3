"""The trust boundary while the back-office is unreachable: only chargers that prove who they are.

Real sockets, a real PostgreSQL, an in-process proxy with its outbox; back-offices that are
down, refuse, hang, drop mid-handshake, or accept and drop at once stand in for the ones out
there (each speaks real HTTP/WebSocket).
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio
from trio_websocket import open_websocket_url
from wsproto.utilities import generate_accept_token

from proxy.cli.outbox import outbox_command
from proxy.outbox.policy import UNPROVEN
from proxy.routing.auth import basic_header
from proxy.runtime.config import Config, Route
from proxy.runtime.logs import LogBudget
from testkit.outbox_proxy import call, connect, running_proxy
from testkit.raw_charger import RawCharger
from testkit.upstream import Csms
from testkit.waiting import eventually

# Forwarded by both engines (see testkit.engines).
pytestmark = pytest.mark.usefixtures("each_engine")

HEADER = basic_header("CP-1", "the-back-office-password").decode()


def passthrough(port: int) -> Route:
    return Route(upstream=f"ws://127.0.0.1:{port}/ocpp")


async def upgrade(
    port: int, identity: str, authorization: str | None = None
) -> tuple[bytes, RawCharger]:
    charger = await RawCharger.connect(port)
    extra = f"Authorization: {authorization}\r\n" if authorization else ""
    return await charger.upgrade(identity, extra), charger


async def status_of(port: int, identity: str, authorization: str | None = None) -> bytes:
    head, charger = await upgrade(port, identity, authorization)
    await charger.aclose()
    return head


def unused_port() -> int:
    with socket.socket() as probe:  # nobody listens on it once the probe is closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- back-offices that misbehave at the handshake --------------------------------------------------


async def _read_request(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data


def _accept_key(request: bytes) -> bytes:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return generate_accept_token(value.strip())
    return b""


async def drops_mid_handshake(stream: trio.SocketStream) -> None:
    await _read_request(stream)
    await stream.aclose()


async def never_answers(stream: trio.SocketStream) -> None:
    await _read_request(stream)
    await trio.sleep_forever()


class AcceptsAndDrops:
    """Completes the WebSocket handshake (101), then hangs up at once without a close frame."""

    def __init__(self) -> None:
        self.dials = 0

    async def __call__(self, stream: trio.SocketStream) -> None:
        request = await _read_request(stream)
        self.dials += 1
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Protocol: ocpp1.6\r\nSec-WebSocket-Accept: "
            + _accept_key(request)
            + b"\r\n\r\n"
        )
        await stream.aclose()


async def serve_tcp(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return listeners[0].socket.getsockname()[1]


# -- finding: takeover during an upstream outage ----------------------------------------------------


@pytest.mark.parametrize("outage", ["refused", "timeout", "dropped mid-handshake"])
async def test_a_charger_without_proof_is_refused_while_the_back_office_is_unreachable(
    settings, tmp_path, nursery, outage
):
    port = {"refused": unused_port}.get(outage)
    if port is not None:
        upstream_port = port()
    else:
        upstream_port = await serve_tcp(
            nursery, never_answers if outage == "timeout" else drops_mid_handshake
        )
    csms = Csms()
    csms.port = upstream_port
    async with running_proxy(settings, csms, tmp_path, route=passthrough(upstream_port)) as (
        port,
        server,
        db,
    ):
        for authorization in (None, HEADER):  # no verifier stored: no header proves anything
            head, charger = await upgrade(port, "CP-1", authorization)
            assert head.startswith(b"HTTP/1.1 503")
            assert b"retry-after: 30" in head.lower()
            await charger.aclose()
        assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 0
        assert metric_of(server, "ere_proxy_handshakes_total", outcome="offline_unproven") == 2


def metric_of(server, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_an_attacker_never_replaces_the_live_charger_nor_gets_anything_stored(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    route = passthrough(csms.port)
    async with running_proxy(settings, csms, tmp_path, route=route) as (port, server, db):
        headers = [("Authorization", HEADER)]
        async with open_websocket_url(
            f"ws://127.0.0.1:{port}/ocpp/CP-1", subprotocols=["ocpp1.6"], extra_headers=headers
        ) as real:
            assert (await call(real, "h0", "Heartbeat", {}))[
                0
            ] == 3  # forwarded: the back-office accepted it
            await eventually(
                lambda: db.fetchval(
                    "SELECT count(*) FROM charger_verifiers WHERE identity = 'CP-1'"
                )
            )
            csms.stop()  # the outage: the real charger stays, answered offline
            await eventually(lambda: server.metrics.outbox.offline._value.get() == 1)
            wrong = basic_header("CP-1", "a guess").decode()
            for authorization in (None, wrong, "Bearer x", HEADER[:-2]):
                assert (await status_of(port, "CP-1", authorization)).startswith(b"HTTP/1.1 503")
            # The real charger was never replaced: still connected, still answered.
            assert (
                await call(
                    real,
                    "s",
                    "StatusNotification",
                    {"connectorId": 1, "status": "Available", "errorCode": "NoError"},
                )
            )[0] == 3
        proofs = [row["proof"] for row in await db.fetch("SELECT proof FROM outbox_entries")]
        assert proofs == ["upstream"]  # the real charger's, queued over its authenticated link
        assert metric_of(server, "ere_proxy_link_ends_total", reason="replaced") == 0


async def test_the_header_the_back_office_accepted_admits_the_charger_offline_and_its_calls_are_replayed(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    async with running_proxy(settings, csms, tmp_path, route=passthrough(csms.port)) as (
        port,
        _server,
        db,
    ):
        url = f"ws://127.0.0.1:{port}/ocpp/CP-1"
        async with open_websocket_url(
            url, subprotocols=["ocpp1.6"], extra_headers=[("Authorization", HEADER)]
        ) as ws:
            await call(ws, "h0", "Heartbeat", {})
        await eventually(lambda: db.fetchval("SELECT count(*) FROM charger_verifiers"))
        digest = await db.fetchval("SELECT digest FROM charger_verifiers")
        assert (
            HEADER.encode() not in digest and len(digest) == 32
        )  # a keyed digest, never the header
        csms.stop()
        async with open_websocket_url(
            url, subprotocols=["ocpp1.6"], extra_headers=[("Authorization", HEADER)]
        ) as ws:
            status = {"connectorId": 1, "status": "Charging", "errorCode": "NoError"}
            assert (await call(ws, "s", "StatusNotification", status))[0] == 3
            assert [r["proof"] for r in await db.fetch("SELECT proof FROM outbox_entries")] == [
                "verifier"
            ]
            await csms.start(nursery)
            await csms.wait_until(
                lambda: [c[1] for c in csms.calls] == ["Heartbeat", "StatusNotification"]
            )


async def test_a_managed_charger_is_admitted_offline_with_its_password_only(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    async with running_proxy(settings, csms, tmp_path) as (port, _server, db):  # a managed route
        assert (await status_of(port, "CP-9")).startswith(b"HTTP/1.1 401")
        assert (await status_of(port, "CP-9", basic_header("CP-9", "wrong").decode())).startswith(
            b"HTTP/1.1 401"
        )
        async with connect(port, "CP-9") as ws:
            await call(
                ws,
                "h",
                "StatusNotification",
                {"connectorId": 1, "status": "Available", "errorCode": "NoError"},
            )
        assert [r["proof"] for r in await db.fetch("SELECT proof FROM outbox_entries")] == [
            "password"
        ]


async def test_entries_queued_without_proof_are_parked_and_replayed_only_after_an_operator_requeues_them(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    async with running_proxy(settings, csms, tmp_path) as (port, _server, db):
        # As an older version left them: queued offline with nothing to say who the charger was.
        await db.execute(
            "INSERT INTO outbox_chargers (identity, epoch, next_seq) VALUES ('CP-1', 1, 3)"
        )
        for seq, action in ((1, "StatusNotification"), (2, "Heartbeat")):
            payload = (
                b'{"connectorId": 1, "status": "Faulted", "errorCode": "OtherError"}'
                if seq == 1
                else b"{}"
            )
            await db.execute(
                "INSERT INTO outbox_entries (identity, seq, action, payload, received_at, proof) "
                "VALUES ('CP-1', $1, $2, $3, now(), 'unknown')",
                seq,
                action,
                payload,
            )
        async with connect(port, "CP-1") as ws:
            await call(ws, "h1", "Heartbeat", {})
            # The live Heartbeat may have been queued behind the old entries (answered offline,
            # replayed once they are parked): wait until nothing but the two parked ones is left.
            await eventually(
                lambda: db.fetchval(
                    "SELECT count(*) = 2 AND bool_and(dead_reason IS NOT NULL) FROM outbox_entries"
                )
            )
        assert [c[1] for c in csms.calls] == [
            "Heartbeat"
        ]  # only the live one: nothing replayed in its name
        assert {
            r["dead_reason"] for r in await db.fetch("SELECT dead_reason FROM outbox_entries")
        } == {UNPROVEN}
        config = Config(database=settings)
        requeue = argparse.Namespace(action="requeue", identity="CP-1", seq=1)
        assert await outbox_command(config, requeue, stdout=io.StringIO()) == 0
        assert await db.fetchval("SELECT proof FROM outbox_entries WHERE seq = 1") == "operator"
        async with connect(port, "CP-1") as ws:
            await csms.wait_until(
                lambda: [c[1] for c in csms.calls] == ["Heartbeat", "StatusNotification"]
            )


async def test_offline_authorize_of_an_unknown_tag_is_invalid_by_default(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    async with running_proxy(settings, csms, tmp_path) as (port, _server, _db):
        async with connect(port, "CP-1") as ws:
            assert (await call(ws, "a", "Authorize", {"idTag": "NEVER-SEEN"}))[2] == {
                "idTagInfo": {"status": "Invalid"}
            }


# -- finding: every refusal gets its HTTP answer ---------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
async def test_a_back_office_verdict_reaches_the_charger_with_the_outbox_on(
    settings, tmp_path, nursery, caplog, status
):
    csms = Csms()
    await csms.start(nursery)
    csms.refuse_with = status
    async with running_proxy(settings, csms, tmp_path, route=passthrough(csms.port)) as (
        port,
        server,
        db,
    ):
        with caplog.at_level(logging.INFO, logger="proxy.server"):
            head = await status_of(port, "CP-1", HEADER)
        assert head.startswith(b"HTTP/1.1 %d" % status)
        outcome = "upstream_refused" if status < 500 else "upstream_error"
        assert metric_of(server, "ere_proxy_handshakes_total", outcome=outcome) == 1
        assert metric_of(server, "ere_proxy_handshakes_total", outcome="internal_error") == 0
        assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 0
    [line] = [r for r in caplog.records if r.getMessage() == "handshake refused"]
    assert (line.identity, line.client, line.status, line.outcome) == (
        "CP-1",
        "127.0.0.1",
        status,
        outcome,
    )
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "the-back-office-password" not in caplog.text and HEADER not in caplog.text


async def test_refusal_log_lines_are_rate_limited(settings, tmp_path, nursery, caplog):
    csms = Csms()
    await csms.start(nursery)
    async with running_proxy(settings, csms, tmp_path) as (port, server, _db):
        server._refusal_log = LogBudget(per_second=1e-6, burst=5)  # nothing refills during the test
        with caplog.at_level(logging.INFO, logger="proxy.server"):
            for index in range(60):  # no password for a managed route: all refused 401
                assert (await status_of(port, f"CP-{index}")).startswith(b"HTTP/1.1 401")
        assert metric_of(server, "ere_proxy_handshakes_total", outcome="unauthorized") == 60
    lines = [r for r in caplog.records if r.getMessage() == "handshake refused"]
    assert len(lines) == 5 and server._refusal_log.suppressed() == 55


# -- finding: redial storm ---------------------------------------------------------------------------


async def test_a_back_office_that_accepts_and_drops_is_redialled_with_back_off(
    settings, tmp_path, nursery
):
    flapping = AcceptsAndDrops()
    csms = Csms()
    csms.port = await serve_tcp(nursery, flapping)
    async with running_proxy(settings, csms, tmp_path, redial_min=0.2, redial_max=5.0) as (
        port,
        _server,
        _db,
    ):
        async with connect(port, "CP-1") as ws:
            with trio.move_on_after(1.5):
                while True:  # the charger stays connected, answered offline meanwhile
                    await call(ws, "h", "Heartbeat", {})
                    await trio.sleep(0.1)
    # 0.2 + 0.4 + 0.8 s of back-off after the first loss: at most the handshake and three redials
    # fit in 1.5 s (before, it was redialled every millisecond or two).
    assert 2 <= flapping.dials <= 5


async def test_an_upstream_that_could_not_be_reached_is_not_dialled_again_for_a_moment(
    settings, tmp_path, nursery
):
    dials = 0

    async def counting_drop(stream: trio.SocketStream) -> None:
        nonlocal dials
        dials += 1
        await drops_mid_handshake(stream)

    upstream_port = await serve_tcp(nursery, counting_drop)
    csms = Csms()
    csms.port = upstream_port
    async with running_proxy(settings, csms, tmp_path, route=passthrough(upstream_port)) as (
        port,
        server,
        _db,
    ):
        for _ in range(5):  # a crowd right after the first failure: refused at once, no dial each
            assert (await status_of(port, "CP-1", HEADER)).startswith(b"HTTP/1.1 503")
        assert dials == 1
        await trio.sleep_until(max(server.dialer.down_until.values()))
        assert (await status_of(port, "CP-1", HEADER)).startswith(b"HTTP/1.1 503")
        assert dials == 2  # taken as down for a moment only: dialled again
