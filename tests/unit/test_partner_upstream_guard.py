"""The partner upstream guard without sockets: which upstream URLs partners may register by
their form, how the operator's allow-list matches, and how its setting is validated."""

from __future__ import annotations

import msgspec
import pytest

from proxy.api.upstream_urls import NOT_ALLOWED, UpstreamPolicy, upstream_refusal
from proxy.routing.addresses import host_refusal
from proxy.runtime.config import ApiSettings, Config

OPEN = UpstreamPolicy()


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1/ocpp",
        "ws://10.0.0.5:8080/ocpp",
        "ws://169.254.169.254/",
        "ws://100.100.0.1/",
        "ws://[::ffff:10.0.0.5]/",
        "ws://[fe80::1%25eth0]/",
        "ws://2130706433/",
        "ws://0x7f.0.0.1/",
        "ws://0177.0.0.1/",
        "ws://localhost/",
        "ws://bücher.example/",
        "ws://csms.example.com:0/",
        "ws://-csms.example.com/",
    ],
)
def test_refused_by_form(url: str) -> None:
    assert upstream_refusal(url, OPEN) is not None


def test_public_hosts_pass_and_the_allow_list_narrows_them() -> None:
    for url in ("wss://csms.example.com/ocpp", "ws://8.8.8.8:9000/x", "wss://[2001:4860::1]/"):
        assert upstream_refusal(url, OPEN) is None, url
    listed = UpstreamPolicy.from_settings(
        ApiSettings(partner_upstream_hosts=("*.E-Flux.nl", "csms.example.com."))
    )
    for host in ("ocpp.e-flux.nl", "a.b.E-FLUX.nl.", "CSMS.example.com"):
        assert listed.host_listed(host), host
        assert upstream_refusal(f"wss://{host}/ocpp", listed) is None, host
    for host in ("e-flux.nl", "e-flux.nl.evil.net", "xe-flux.nl", "csms.example.com.evil.net"):
        assert upstream_refusal(f"wss://{host}/ocpp", listed) == NOT_ALLOWED, host
    # A private address is refused for what it is, listed or not.
    ip_listed = UpstreamPolicy(hosts=("10.*",))
    assert upstream_refusal("ws://10.0.0.5/", ip_listed) != NOT_ALLOWED
    assert upstream_refusal("ws://10.0.0.5/", UpstreamPolicy(True, ("10.*",))) is None


def test_allowing_private_upstreams_keeps_multicast_and_unspecified_out() -> None:
    private = UpstreamPolicy(allow_private=True)
    for url in ("ws://127.0.0.1:9000/", "ws://localhost/", "ws://[::1]/", "ws://10.1.1.1/"):
        assert upstream_refusal(url, private) is None, url
    for url in ("ws://224.0.0.1/", "ws://0.0.0.0/", "ws://[::]/", "ws://2130706433/"):
        assert upstream_refusal(url, private) is not None, url
    assert host_refusal("fe80::1%eth0", allow_private=False) is not None


def test_the_allow_list_setting_is_validated() -> None:
    loaded = msgspec.convert({"api": {"partner_upstream_hosts": ["*.e-flux.nl"]}}, Config)
    assert loaded.api.partner_upstream_hosts == ("*.e-flux.nl",)
    assert loaded.api.upstreams_allow_private is False
    for bad in ("", "wss://csms.example.com", "a b", "csms.example.com/ocpp", "u@h"):
        with pytest.raises(ValueError, match="partner_upstream_hosts"):
            ApiSettings(partner_upstream_hosts=(bad,))
