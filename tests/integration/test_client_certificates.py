"""Security profile 3 on real sockets: client certificates verified and bound to the identity,
refusals before routing and before any dial, the verified identity told to the back-office, and
mutual TLS from the proxy to a back-office. Certificates are minted by trustme; CRLs by
cryptography with the trustme CA's key."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from trio_websocket import open_websocket_url, serve_websocket

from proxy.forward.listener import (
    listening_port,
    open_listener,
    reload_certificates,
    server_tls_context,
)
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.config import Config, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from proxy.runtime.role import export_certificate_expiry
from testkit.engines import engine_under_test
from testkit.in_process_proxy import ProxyHandle, metric, roundtrip, start_proxy
from testkit.upstream import Upstream

HEADER = "X-Client-Cert-CN"


def write_crl(ca: trustme.CA, revoked: trustme.LeafCert, path: Path) -> None:
    """A current CRL of `ca` revoking `revoked`."""
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    leaf = x509.load_pem_x509_certificate(revoked.cert_chain_pems[0].bytes())
    now = dt.datetime.now(dt.UTC)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(leaf.serial_number)
        .revocation_date(now - dt.timedelta(hours=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=7))
        .add_revoked_certificate(entry)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


@dataclass
class Pki:
    server_ca: trustme.CA  # the proxy's listener certificate
    charger_ca: trustme.CA  # the client CA the proxy trusts
    files: dict[str, str]
    revoked: trustme.LeafCert  # issued by charger_ca to CP-1, revoked by the CRL

    def charger(self, cert: trustme.LeafCert | None) -> ssl.SSLContext:
        """A charger's TLS context: trusts the proxy, presents `cert` (None: no certificate)."""
        context = ssl.create_default_context()
        self.server_ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    server_ca, charger_ca = trustme.CA(), trustme.CA()
    files = {name: str(tmp_path / f"{name}.pem") for name in ("cert", "key", "client_ca", "crl")}
    listener = server_ca.issue_cert("localhost")
    listener.private_key_pem.write_to_path(files["key"])
    listener.cert_chain_pems[0].write_to_path(files["cert"])
    charger_ca.cert_pem.write_to_path(files["client_ca"])
    revoked = charger_ca.issue_cert("revoked.chargers.test", common_name="CP-1")
    write_crl(charger_ca, revoked, Path(files["crl"]))
    return Pki(server_ca, charger_ca, files, revoked)


def tls_settings(pki: Pki, **extra: object) -> ProxySettings:
    return msgspec.convert(
        {
            "host": "127.0.0.1",
            "port": 0,
            "handshake_timeout": 2.0,
            "dial_timeout": 2.0,
            "close_timeout": 1.0,
            "engine": engine_under_test(),
            "tls_cert": pki.files["cert"],
            "tls_key": pki.files["key"],
            "tls_client_ca": pki.files["client_ca"],
            "tls_crl": pki.files["crl"],
            **extra,
        },
        ProxySettings,
    )


async def upgrade(port: int, identity: str, context: ssl.SSLContext, headers: bytes = b"") -> bytes:
    """A raw upgrade request over TLS; the proxy's answer (b"": closed without an HTTP answer)."""
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port), context, server_hostname="localhost"
    )
    answer = b""
    with trio.fail_after(5):
        try:
            await stream.send_all(
                b"GET /ocpp/%s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n%s\r\n"
                % (identity.encode(), headers)
            )
            while b"\r\n\r\n" not in answer and (chunk := await stream.receive_some(4096)):
                answer += chunk
        except (trio.BrokenResourceError, ssl.SSLError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
    return answer


async def counted(handle: ProxyHandle, outcome: str, expected: int) -> None:
    with trio.fail_after(5):
        while metric(handle, "ere_proxy_handshakes_total", outcome=outcome) != expected:
            await trio.sleep(0.01)


def header_values(peer, name: str) -> list[bytes]:
    return [value for key, value in peer.headers if key == name.lower().encode()]


@pytest.fixture
async def proxy3(nursery, upstream, pki) -> ProxyHandle:
    """CP-1 and CP-2 on profile 3 (the verified identity forwarded); others on passthrough."""
    up = f"ws://127.0.0.1:{upstream.port}/ocpp"
    profile3 = Route(upstream=up, security_profile=3, forward_client_identity=HEADER)
    config = Config(
        proxy=tls_settings(pki),
        default_route=Route(upstream=up, forward_client_identity=HEADER),
        chargers={"CP-1": profile3, "CP-2": profile3},
    )
    return await start_proxy(nursery, config)


async def test_a_bound_certificate_admits_a_profile_3_charger_and_the_back_office_is_told_who(
    proxy3, upstream, pki
):
    cert = pki.charger_ca.issue_cert("cp-2.chargers.test", common_name="CP-2")
    url = f"wss://localhost:{proxy3.port}/ocpp/CP-2"
    # The charger also sends a header of the same name: it never reaches the back-office.
    forged = [(HEADER, "CP-victim")]
    async with open_websocket_url(
        url, ssl_context=pki.charger(cert), subprotocols=["ocpp1.6"], extra_headers=forged
    ) as ws:
        assert json.loads(await roundtrip(ws, "t1")) == [3, "t1", {"echo": "Heartbeat"}]
    assert header_values(upstream.peers[0], HEADER) == [b"CP-2"]
    assert metric(proxy3, "ere_proxy_handshakes_total", outcome="accepted") == 1


async def test_expired_foreign_and_revoked_certificates_are_closed_before_routing(
    proxy3, upstream, pki
):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = pki.charger_ca.issue_cert(
        "cp-1.chargers.test",
        common_name="CP-1",
        not_before=past - dt.timedelta(days=30),
        not_after=past,
    )
    foreign = trustme.CA().issue_cert("cp-1.chargers.test", common_name="CP-1")
    for n, cert in enumerate((expired, foreign, pki.revoked), start=1):
        assert await upgrade(proxy3.port, "CP-1", pki.charger(cert)) == b""
        await counted(proxy3, "client_cert_invalid", n)
    assert upstream.peers == []  # no dial for any of them
    # The process is up and a charger with a good certificate is served.
    good = pki.charger_ca.issue_cert("cp-1.chargers.test", common_name="CP-1")
    assert (await upgrade(proxy3.port, "CP-1", pki.charger(good))).startswith(b"HTTP/1.1 101 ")
    await upstream.wait_until(lambda: len(upstream.peers) == 1)


async def test_a_certificate_of_another_identity_is_403_before_routing_and_dialling(
    proxy3, upstream, pki
):
    other = pki.charger_ca.issue_cert("cp-2.chargers.test", common_name="CP-2")
    for identity in ("CP-1", "CP-unrouted", "CP-passthrough"):
        answer = await upgrade(proxy3.port, identity, pki.charger(other))
        assert answer.startswith(b"HTTP/1.1 403 "), answer
    await counted(proxy3, "client_cert_mismatch", 3)
    assert metric(proxy3, "ere_proxy_handshakes_total", outcome="not_found") == 0
    assert upstream.peers == []


async def test_a_profile_3_charger_offering_only_basic_is_refused_and_others_keep_basic(
    proxy3, upstream, pki
):
    basic = b"Authorization: Basic " + base64.b64encode(b"CP-1:secret") + b"\r\n"
    answer = await upgrade(proxy3.port, "CP-1", pki.charger(None), basic)
    assert answer.startswith(b"HTTP/1.1 403 ") and b"www-authenticate" not in answer.lower()
    await counted(proxy3, "client_cert_required", 1)
    assert upstream.peers == []
    # A charger without a profile on the same listener: no certificate, Basic passed through.
    answer = await upgrade(proxy3.port, "CP-basic", pki.charger(None), basic)
    assert answer.startswith(b"HTTP/1.1 101 ")
    await upstream.wait_until(lambda: len(upstream.peers) == 1)
    assert upstream.peers[0].authorization == basic.split(b": ", 1)[1].strip().decode()


async def test_a_hostile_charger_cannot_forge_the_identity_header(proxy3, upstream, pki):
    forged = f"{HEADER}: CP-1\r\n{HEADER.lower()}: CP-1\r\n".encode()
    answer = await upgrade(proxy3.port, "CP-hostile", pki.charger(None), forged)
    assert answer.startswith(b"HTTP/1.1 101 ")
    await upstream.wait_until(lambda: len(upstream.peers) == 1)
    assert upstream.peers[0].path == "/ocpp/CP-hostile"
    assert header_values(upstream.peers[0], HEADER) == []


async def test_the_proxy_presents_the_routes_client_certificate_to_an_mtls_back_office(
    nursery, pki, tmp_path
):
    backend_ca, proxy_client_ca = trustme.CA(), trustme.CA()
    backend = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    backend_ca.issue_cert("localhost").configure_cert(backend)
    backend.verify_mode = ssl.CERT_REQUIRED
    proxy_client_ca.configure_trust(backend)
    up = Upstream()
    server = await nursery.start(serve_websocket, up.handler, "127.0.0.1", 0, backend)
    ca_file, cert_file, key_file = (tmp_path / f"up-{n}.pem" for n in ("ca", "cert", "key"))
    backend_ca.cert_pem.write_to_path(str(ca_file))
    ours = proxy_client_ca.issue_cert("proxy.example", common_name="ere-proxy")
    ours.cert_chain_pems[0].write_to_path(str(cert_file))
    ours.private_key_pem.write_to_path(str(key_file))
    url = f"wss://localhost:{server.port}/ocpp"
    config = Config(
        proxy=tls_settings(pki, dial_timeout=0.5),
        chargers={
            "CP-1": Route(
                upstream=url,
                ca_bundle=str(ca_file),
                security_profile=3,
                client_cert=str(cert_file),
                client_key=str(key_file),
                forward_client_identity=HEADER,
            ),
            "CP-nocert": Route(upstream=url, ca_bundle=str(ca_file)),
        },
    )
    handle = await start_proxy(nursery, config)
    charger = pki.charger_ca.issue_cert("cp-1.chargers.test", common_name="CP-1")
    async with open_websocket_url(
        f"wss://localhost:{handle.port}/ocpp/CP-1",
        ssl_context=pki.charger(charger),
        subprotocols=["ocpp1.6"],
    ) as ws:
        assert json.loads(await roundtrip(ws, "t1")) == [3, "t1", {"echo": "Heartbeat"}]
    assert header_values(up.peers[0], HEADER) == [b"CP-1"]
    # A route without a client certificate never gets that back-office's 101 (it aborts the TLS
    # session, or leaves it hanging until the dial timeout): 502 or 504 to the charger.
    answer = await upgrade(handle.port, "CP-nocert", pki.charger(None))
    assert answer.startswith((b"HTTP/1.1 502 ", b"HTTP/1.1 504 ")), answer
    assert len(up.peers) == 1


async def test_a_reload_trusts_the_new_client_ca_only_and_exports_its_expiry(
    nursery, upstream, pki, tmp_path
):
    up = f"ws://127.0.0.1:{upstream.port}/ocpp"
    settings = tls_settings(pki, tls_crl=None)
    config = Config(proxy=settings, default_route=Route(upstream=up, security_profile=3))
    tls = server_tls_context(settings)  # kept, as the proxy role keeps it for SIGHUP
    assert tls is not None
    metrics = ProxyMetrics()
    server = ProxyServer(config, StaticRouter(config), metrics)
    listener = open_listener(settings, reuse_port=False, tls=tls)
    await nursery.start(server.run, [listener])
    port = listening_port(listener)
    export_certificate_expiry(metrics, config)
    old_expiry = metrics.registry.get_sample_value(
        "ere_proxy_certificate_expiry_timestamp_seconds", {"certificate": "client_ca"}
    )
    assert old_expiry is not None

    new_ca = trustme.CA()
    old_cert = pki.charger_ca.issue_cert("cp-1.chargers.test", common_name="CP-1")
    new_cert = new_ca.issue_cert("cp-1.chargers.test", common_name="CP-1")
    assert (await upgrade(port, "CP-1", pki.charger(old_cert))).startswith(b"HTTP/1.1 101 ")
    assert await upgrade(port, "CP-1", pki.charger(new_cert)) == b""

    new_ca.cert_pem.write_to_path(pki.files["client_ca"])  # rotated in place, then SIGHUP
    assert reload_certificates(tls, settings)
    export_certificate_expiry(metrics, config)
    assert (await upgrade(port, "CP-1", pki.charger(new_cert))).startswith(b"HTTP/1.1 101 ")
    assert await upgrade(port, "CP-1", pki.charger(old_cert)) == b""  # the old CA is gone
    assert metrics.registry.get_sample_value(
        "ere_proxy_certificate_expiry_timestamp_seconds", {"certificate": "client_ca"}
    ) == pytest.approx(
        x509.load_pem_x509_certificate(new_ca.cert_pem.bytes()).not_valid_after_utc.timestamp()
    )
    Path(pki.files["client_ca"]).write_text("not a certificate")
    assert not reload_certificates(tls, settings)  # logged; the running context stays
    assert (await upgrade(port, "CP-1", pki.charger(new_cert))).startswith(b"HTTP/1.1 101 ")
