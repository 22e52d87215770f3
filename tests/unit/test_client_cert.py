"""Security profile 3, sans-IO: binding a client certificate to the identity, the profile-3
authentication decision, and the settings that go with them."""

from __future__ import annotations

import msgspec
import pytest

from proxy.routing.auth import basic_header, decide_auth
from proxy.routing.client_cert import (
    Binding,
    ClientCertificate,
    bind,
    forwarded_identity,
    from_peercert,
)
from proxy.runtime.config import Config, Route

UP = "wss://csms.example/ocpp"


def test_a_decoded_peer_certificate_gives_its_common_names_and_uris():
    decoded = {
        "subject": ((("countryName", "NL"),), (("commonName", "CP-1"),)),
        "subjectAltName": (("DNS", "cp-1.example"), ("URI", "urn:cpo:cs:CP-1")),
    }
    assert from_peercert(decoded) == ClientCertificate(("CP-1",), ("urn:cpo:cs:CP-1",))
    assert from_peercert(None) is None and from_peercert({}) is None


@pytest.mark.parametrize(
    ("rule", "certificate", "expected"),
    [
        ("cn", ClientCertificate(("CP-1",)), Binding.BOUND),
        ("cn", ClientCertificate(("CP-2",)), Binding.MISMATCH),
        ("cn", ClientCertificate(("cp-1",)), Binding.MISMATCH),  # exact, case-sensitive
        ("cn", ClientCertificate(("CP-1", "CP-2")), Binding.MISMATCH),  # one CN, no choice
        ("cn", ClientCertificate((), ("urn:x:CP-1",)), Binding.MISMATCH),
        ("san_uri", ClientCertificate((), ("urn:cpo:cs:CP-1",)), Binding.BOUND),
        ("san_uri", ClientCertificate((), ("https://cpo.example/cs/CP-1",)), Binding.BOUND),
        ("san_uri", ClientCertificate(("CP-1",), ("urn:cpo:cs:XCP-1",)), Binding.MISMATCH),
        ("none", ClientCertificate(("anyone",)), Binding.BOUND),
        ("cn", None, Binding.ABSENT),
        ("none", None, Binding.ABSENT),
    ],
)
def test_binding_rules(rule, certificate, expected):
    assert bind(rule, "CP-1", certificate) is expected


def test_only_a_verified_identity_is_forwarded():
    assert forwarded_identity("cn", "CP-1", ClientCertificate(("CP-1",))) == "CP-1"
    assert forwarded_identity("cn", "CP-1", ClientCertificate(("CP-2",))) is None
    assert forwarded_identity("cn", "CP-1", None) is None
    # Rule `none`: the URL's identity was not checked, so the certificate's own name is told.
    assert forwarded_identity("none", "CP-1", ClientCertificate(("CP-9",))) == "CP-9"
    assert forwarded_identity("none", "CP-1", ClientCertificate(("a\r\nX-Evil: 1",))) is None


def test_a_profile_3_route_needs_the_certificate_and_never_falls_back_to_basic():
    route = Route(upstream=UP, security_profile=3)
    basic = basic_header("CP-1", "secret")
    assert decide_auth(route, "CP-1", basic).status == 403
    assert decide_auth(route, "CP-1", None, certified=True).upstream_authorization is None
    managed = Route(
        upstream=UP,
        security_profile=3,
        auth="managed",
        upstream_username="proxy",
        upstream_password="pw",
    )
    outcome = decide_auth(managed, "CP-1", basic, certified=True)
    assert outcome.status is None and outcome.password_to_verify is None
    assert outcome.upstream_authorization == basic_header("proxy", "pw")
    # Profiles 1 and 2 (and no profile) keep Basic as before, certificate or not.
    hashed = Route(upstream=UP, auth="managed", password_hash="sha256$x$y", security_profile=2)
    assert decide_auth(hashed, "CP-1", None, certified=True).status == 401
    assert decide_auth(hashed, "CP-1", basic).password_to_verify == "secret"


def _config(raw: dict) -> Config:
    return msgspec.convert(raw, Config)


def test_settings_that_cannot_work_are_refused_at_load():
    tls = {"tls_cert": "c.pem", "tls_key": "k.pem"}
    profile3 = {"upstream": UP, "security_profile": 3}
    with pytest.raises(ValueError, match="needs proxy.tls_client_ca"):
        _config({"proxy": tls, "chargers": {"CP-1": profile3}})
    with pytest.raises(ValueError, match="tls_client_ca needs proxy.tls_cert"):
        _config({"proxy": {"tls_client_ca": "ca.pem"}})
    with pytest.raises(ValueError, match="tls_crl needs"):
        _config({"proxy": {**tls, "tls_crl": "crl.pem"}})
    with pytest.raises(msgspec.ValidationError):
        _config({"proxy": {**tls, "client_cert_identity": "serial"}})
    with pytest.raises(msgspec.ValidationError):
        _config({"chargers": {"CP-1": {"upstream": UP, "security_profile": 4}}})
    ok = _config({"proxy": {**tls, "tls_client_ca": "ca.pem"}, "chargers": {"CP-1": profile3}})
    assert ok.chargers["CP-1"].security_profile == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"client_cert": "c.pem"}, "go together"),
        ({"upstream": "ws://x/ocpp", "client_cert": "c", "client_key": "k"}, "wss://"),
        ({"forward_client_identity": "Authorization"}, "the proxy sends it"),
        ({"forward_client_identity": "Sec-WebSocket-Key"}, "the proxy sends it"),
        ({"forward_client_identity": "X Bad"}, "header name"),
    ],
)
def test_route_tls_fields_are_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        Route(**{"upstream": UP, **fields})
