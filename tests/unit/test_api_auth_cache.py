"""The partner API's memory of verified credentials: trusted for its time, then forgotten;
bounded; never holding a credential itself; and a key's use stamped once a minute at most."""

from __future__ import annotations

import pytest

from proxy.api.auth_cache import STAMP_SECONDS, AuthCache
from proxy.api.key_store import Caller

ALICE = Caller("acme", "aaaaaaaaaaaa", frozenset({"customers:read"}))
TOKEN_CALLER = Caller("acme", "aaaaaaaaaaaa", frozenset({"customers:read"}), by_token=True)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_credential_is_trusted_for_the_ttl_and_not_after():
    clock = Clock()
    cache = AuthCache(2.0, clock=clock)
    assert cache.get("ere_key") is None
    cache.put("ere_key", ALICE)
    cache.put("ert_token", TOKEN_CALLER)
    clock.now += 1.999
    assert cache.get("ere_key") is ALICE and cache.get("ert_token") is TOKEN_CALLER
    assert cache.get("ere_other") is None
    clock.now += 0.001
    assert cache.get("ere_key") is None and cache.get("ert_token") is None
    assert len(cache) == 0  # what expired is dropped when asked for


def test_a_zero_ttl_remembers_nothing():
    cache = AuthCache(0)
    cache.put("ere_key", ALICE)
    assert cache.get("ere_key") is None and len(cache) == 0


def test_the_cache_is_bounded_and_holds_digests_not_credentials():
    clock = Clock()
    cache = AuthCache(60.0, max_entries=3, clock=clock)
    for n in range(5):
        cache.put(f"ere_key{n}", ALICE)
    assert len(cache) == 3
    assert cache.get("ere_key0") is None and cache.get("ere_key1") is None
    assert all(cache.get(f"ere_key{n}") is ALICE for n in (2, 3, 4))
    assert not any(isinstance(key, str) or b"ere_key" in key for key in cache._callers)


def test_a_keys_use_is_stamped_once_a_minute_at_most():
    clock = Clock()
    cache = AuthCache(2.0, max_entries=2, clock=clock)
    assert cache.stamp_due("k1") and not cache.stamp_due("k1")
    clock.now += STAMP_SECONDS - 0.1
    assert not cache.stamp_due("k1") and cache.stamp_due("k2")
    clock.now += 0.1
    assert cache.stamp_due("k1") and not cache.stamp_due("k1")
    assert cache.stamp_due("k3")  # past the bound the oldest (k2) is forgotten
    assert cache.stamp_due("k2")


@pytest.mark.parametrize(("ttl", "entries"), [(-1, 10), (2, 0)])
def test_nonsense_settings_are_refused(ttl, entries):
    with pytest.raises(ValueError):
        AuthCache(ttl, max_entries=entries)
