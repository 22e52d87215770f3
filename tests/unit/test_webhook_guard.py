"""The webhook URL guard and the retry schedule, without sockets: which URLs and addresses are
refused, and when a failed delivery is tried again."""

from __future__ import annotations

import pytest

from proxy.api.webhook_schedule import Backoff
from proxy.api.webhook_urls import RefusedUrl, Unresolved, address_allowed, check_url, resolve

REFUSED = [
    "http://hooks.example.com/ere",  # plain http
    "https://user:pw@hooks.example.com/ere",  # credentials
    "https://hooks.example.com/ere#frag",
    "https://127.0.0.1/ere",
    "https://127.1.2.3/ere",
    "https://10.0.0.7/ere",
    "https://172.16.5.4/ere",
    "https://192.168.1.1/ere",
    "https://169.254.169.254/latest/meta-data",
    "https://100.64.0.1/ere",  # shared address space (CGNAT)
    "https://0.0.0.0/ere",
    "https://224.0.0.1/ere",
    "https://255.255.255.255/ere",
    "https://[::1]/ere",
    "https://[::]/ere",
    "https://[fe80::1]/ere",
    "https://[fc00::1]/ere",
    "https://[::ffff:127.0.0.1]/ere",  # IPv4-mapped
    "https://[::ffff:a9fe:a9fe]/ere",  # IPv4-mapped 169.254.169.254
    "https://[64:ff9b::a00:1]/ere",  # NAT64 of 10.0.0.1
    "https://[2002:7f00:1::1]/ere",  # 6to4 of 127.0.0.1
    "https://localhost/ere",
    "https://api.localhost/ere",
    "https://2130706433/ere",  # 127.0.0.1 as a number
    "https://0x7f.1/ere",
    "https://h.example\\@127.0.0.1/",
    "https://hooks example.com/",
    "https://hooks.example.com/\x00",
    "https://-bad-.example.com/",
    "https://a..b/",
    "https:///ere",
    "https://hooks.example.com:0/",
    "https://hooks.example.com:70000/",
    "ftp://hooks.example.com/",
    "hooks.example.com/ere",
    "https://xn--zz.com",  # an invalid IDNA label (the parser raises)
    "https://" + "a" * 2100 + ".com/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused_urls(url):
    with pytest.raises(RefusedUrl):
        check_url(url, allow_private=False)


def test_public_urls_pass_as_deliveries_will_send_them():
    assert str(check_url("https://hooks.example.com/ere?x=1", allow_private=False)) == (
        "https://hooks.example.com/ere?x=1"
    )
    assert str(check_url("HTTPS://Hooks.Example.COM:8443/a", allow_private=False)) == (
        "https://hooks.example.com:8443/a"
    )
    assert str(check_url("https://bücher.example/x", allow_private=False)) == (
        "https://xn--bcher-kva.example/x"
    )
    assert check_url("https://8.8.8.8/x", allow_private=False).host == "8.8.8.8"
    assert check_url("https://[2001:4860:4860::8888]/x", allow_private=False).host == (
        "2001:4860:4860::8888"
    )


def test_allowing_private_lets_local_addresses_and_http_through():
    for url in ("http://127.0.0.1:8080/hook", "https://10.0.0.7/", "http://localhost:1/x"):
        assert check_url(url, allow_private=True)
    for url in ("https://user:pw@127.0.0.1/", "ftp://127.0.0.1/", "https://224.0.0.1/"):
        with pytest.raises(RefusedUrl):
            check_url(url, allow_private=True)


def test_addresses():
    assert address_allowed("93.184.215.14", allow_private=False)
    assert address_allowed("2606:2800:21f:cb07:6820:80da:af6b:8b2c", allow_private=False)
    for address in ("127.0.0.1", "10.1.1.1", "169.254.169.254", "::1", "fe80::1%eth0", "bogus"):
        assert not address_allowed(address, allow_private=False), address
    assert address_allowed("127.0.0.1", allow_private=True)
    assert not address_allowed("0.0.0.0", allow_private=True)


async def test_resolving_checks_every_address():
    local = check_url("http://localhost:9/x", allow_private=True)
    assert "127.0.0.1" in await resolve(local, allow_private=True)
    with pytest.raises(RefusedUrl):
        await resolve(local, allow_private=False)
    literal = check_url("https://8.8.8.8/x", allow_private=False)
    assert await resolve(literal, allow_private=False) == ["8.8.8.8"]
    with pytest.raises(Unresolved):
        await resolve(
            check_url("https://no-such-host.invalid/", allow_private=False), allow_private=False
        )


def test_backoff_doubles_to_the_cap_with_jitter_then_gives_up():
    schedule = Backoff()
    delays = [schedule.delay(n, 0.0) for n in range(1, 15)]
    assert delays[:4] == [30.0, 60.0, 120.0, 240.0]
    assert max(d for d in delays if d is not None) == 6 * 3600.0
    assert schedule.delay(15, 0.0) is None
    assert schedule.delay(1, 0.999) == pytest.approx(30.0 * (1 - 0.2 * 0.999))
    total = sum(d for d in delays if d is not None)
    assert 24 * 3600 < total < 48 * 3600  # about a day and a half of retries
    assert Backoff(attempts=2).delay(2, 0.5) is None
    with pytest.raises(ValueError):
        Backoff(first=0)
