"""The charger registry on a real PostgreSQL: records, sealed secrets, and the router's snapshot."""

from __future__ import annotations

import base64
import logging
import subprocess

import asyncpg
import pytest
import trio

from proxy.routing.auth import hash_password
from proxy.routing.registry.errors import (
    ChargerExists,
    ChargerNotFound,
    InvalidIdentity,
    NotManaged,
    SecretKeyError,
)
from proxy.routing.registry.records import (
    add_charger,
    generate_password,
    get_charger,
    list_chargers,
    ocpp_url,
    remove_charger,
    reseal_secrets,
    set_password_hash,
    validate_identity,
)
from proxy.routing.registry.router import DatabaseRouter
from proxy.routing.registry.sealing import KeyRing, generate_key
from proxy.runtime.config import Config, DatabaseSettings, ProxySettings, RegistrySettings, Route
from proxy.store.db import open_database
from proxy.store.embedded import install_dir

SECRET = "csms-issued-Zq7-secret"
KEY = generate_key()
HASH = hash_password("charger-password")


def managed(secret: str | None = SECRET, upstream: str = "wss://csms.example.com/ocpp") -> Route:
    return Route(
        upstream=upstream,
        auth="managed",
        password_hash=HASH,
        upstream_username="cp",
        upstream_password=secret,
    )


def config(**toml: object) -> Config:
    registry = RegistrySettings(public_url="wss://proxy.example.com/ocpp/", refresh_interval=0.05)
    return Config(registry=registry, **toml)  # type: ignore[arg-type]


# --- identities, keys and passwords (no database) ---


@pytest.mark.parametrize("identity", ["", "x" * 49, "CP:1", "CP\n1", ".", ".."])
def test_invalid_identities_are_refused(identity: str) -> None:
    with pytest.raises(InvalidIdentity):
        validate_identity(identity)


def test_valid_identities_and_their_ocpp_url() -> None:
    assert validate_identity("x" * 48) == "x" * 48
    assert ocpp_url(config(), "CP 1/ü") == "wss://proxy.example.com/ocpp/CP%201%2F%C3%BC"
    assert ocpp_url(Config(), "CP-1") is None  # 127.0.0.1: no URL a charger could use
    reachable = Config(proxy=ProxySettings(host="192.0.2.7", port=9000))
    assert ocpp_url(reachable, "CP-1") == "ws://192.0.2.7:9000/ocpp/CP-1"


def test_generated_passwords_are_long_and_distinct() -> None:
    passwords = {generate_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(len(p) == 32 and p.isalnum() for p in passwords)


def test_sealed_secrets_open_only_with_their_key_and_identity() -> None:
    keys = KeyRing.parse(KEY)
    sealed, key_id = keys.seal("CP-1", SECRET)
    assert SECRET.encode() not in sealed
    assert keys.open("CP-1", sealed, key_id) == SECRET
    with pytest.raises(SecretKeyError, match="does not open"):
        keys.open("CP-2", sealed, key_id)  # moved to another row
    with pytest.raises(SecretKeyError, match="does not hold") as raised:
        KeyRing.parse(generate_key(), "environment variable K").open("CP-1", sealed, key_id)
    assert SECRET not in str(raised.value) and KEY not in str(raised.value)


def test_a_key_ring_seals_with_its_first_key_and_opens_with_all() -> None:
    old, new = KEY, generate_key()
    sealed, old_id = KeyRing.parse(old).seal("CP-1", SECRET)
    both = KeyRing.parse(f"{new}, {old}")
    assert both.primary_id != old_id
    assert both.open("CP-1", sealed, old_id) == SECRET
    standard = base64.b64encode(base64.urlsafe_b64decode(new)).decode()
    assert KeyRing.parse(standard).primary_id == both.primary_id


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"short").decode(), ","])
def test_malformed_keys_are_refused_clearly(text: str) -> None:
    with pytest.raises(SecretKeyError, match="environment variable K"):
        KeyRing.parse(text, "environment variable K")


def test_an_unset_key_variable_gives_no_key_ring() -> None:
    assert KeyRing.from_env("K", {}) is None
    assert KeyRing.from_env("K", {"K": " "}) is None
    assert KeyRing.from_env("K", {"K": KEY}) is not None


# --- records ---


async def test_add_get_list_remove(settings: DatabaseSettings) -> None:
    keys = KeyRing.parse(KEY)
    async with open_database(settings) as db:
        added = await add_charger(db, "CP-2", managed(), keys=keys)
        await add_charger(db, "CP-1", Route(upstream="ws://csms.example.com/ocpp"), keys=None)
        assert added.has_upstream_secret and added.secret_key_id == keys.primary_id
        assert SECRET not in repr(added) and HASH not in repr(added)
        assert [c.identity for c in await list_chargers(db)] == ["CP-1", "CP-2"]
        fetched = await get_charger(db, "CP-2")
        assert fetched is not None and fetched.route(keys) == managed()
        summary = fetched.summary()
        assert summary["upstream_secret"] is True and "password_hash" not in summary
        with pytest.raises(ChargerExists):
            await add_charger(db, "CP-1", Route(upstream="ws://other.example.com"), keys=None)
        await remove_charger(db, "CP-1")
        assert await get_charger(db, "CP-1") is None
        with pytest.raises(ChargerNotFound):
            await remove_charger(db, "CP-1")


async def test_the_table_refuses_what_the_proxy_could_not_route(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        for identity, upstream, auth, password_hash in (
            ("CP:1", "ws://a", "passthrough", None),
            ("CP-1", "http://a", "passthrough", None),
            ("CP-1", "ws://a", "managed", None),
            ("CP-1", "ws://a", "open", None),
        ):
            with pytest.raises(asyncpg.CheckViolationError):
                await db.execute(
                    "INSERT INTO chargers (identity, upstream, auth, password_hash) VALUES ($1, $2, $3, $4)",
                    identity,
                    upstream,
                    auth,
                    password_hash,
                )


async def test_storing_a_secret_without_a_key_is_refused(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        with pytest.raises(SecretKeyError, match="not set"):
            await add_charger(db, "CP-1", managed(), keys=None)
        assert await list_chargers(db) == []


async def test_updates_move_updated_at_and_a_new_hash_replaces_the_old(
    settings: DatabaseSettings,
) -> None:
    async with open_database(settings) as db:
        before = await add_charger(db, "CP-1", managed(secret=None), keys=None)
        await add_charger(db, "CP-P", Route(upstream="ws://a.example.com"), keys=None)
        new_hash = hash_password("new")
        await set_password_hash(db, "CP-1", new_hash)
        after = await get_charger(db, "CP-1")
        assert (
            after is not None
            and after.password_hash == new_hash
            and after.updated_at > before.updated_at
        )
        with pytest.raises(NotManaged):
            await set_password_hash(db, "CP-P", new_hash)
        with pytest.raises(ChargerNotFound):
            await set_password_hash(db, "CP-X", new_hash)


def _pg_dump(dsn: str) -> bytes:
    binary = install_dir() / "bin" / "pg_dump"
    return subprocess.run(
        [str(binary), "--data-only", "--table=chargers", "--dbname", dsn],
        capture_output=True,
        check=True,
    ).stdout


async def test_a_dump_of_the_table_holds_no_plaintext_secret(settings: DatabaseSettings) -> None:
    async with open_database(settings) as db:
        await add_charger(db, "CP-1", managed(), keys=KeyRing.parse(KEY))
        dump = await trio.to_thread.run_sync(_pg_dump, settings.dsn)
    assert b"CP-1" in dump and b"wss://csms.example.com/ocpp" in dump  # the dump has the row
    for leak in (
        SECRET.encode(),
        base64.b64encode(SECRET.encode()),
        SECRET.encode().hex().encode(),
    ):
        assert leak not in dump


async def test_reseal_moves_secrets_to_the_first_key(settings: DatabaseSettings) -> None:
    old, new = KEY, generate_key()
    async with open_database(settings) as db:
        await add_charger(db, "CP-1", managed(), keys=KeyRing.parse(old))
        rotated = KeyRing.parse(f"{new},{old}")
        assert await reseal_secrets(db, rotated) == 1
        assert await reseal_secrets(db, rotated) == 0
        charger = await get_charger(db, "CP-1")
        assert charger is not None
        assert charger.route(KeyRing.parse(new)).upstream_password == SECRET


# --- the router ---


async def test_router_prefers_the_database_then_toml_chargers_then_the_default(
    settings: DatabaseSettings,
) -> None:
    toml = config(
        chargers={
            "CP-1": Route(upstream="ws://toml.example.com"),
            "CP-T": Route(upstream="ws://toml.example.com"),
        },
        default_route=Route(upstream="ws://default.example.com"),
    )
    keys = KeyRing.parse(KEY)
    router = DatabaseRouter(toml, keys)
    async with open_database(settings) as db:
        await add_charger(db, "CP-1", managed(), keys=keys)
        await add_charger(
            db, "CP-OFF", Route(upstream="ws://db.example.com"), keys=None, enabled=False
        )
        await router.reload(db)
    assert router.lookup("CP-1") == managed()  # the secret is opened into the route
    assert router.lookup("CP-OFF") is None  # disabled in the database: refused, not defaulted
    assert router.lookup("CP-T") == Route(upstream="ws://toml.example.com")
    assert router.lookup("CP-X") == Route(upstream="ws://default.example.com")
    router.replace(Config())
    assert router.lookup("CP-T") is None and router.lookup("CP-X") is None
    assert router.lookup("CP-1") == managed()


async def test_refresh_picks_up_additions_changes_and_removals(settings: DatabaseSettings) -> None:
    keys = KeyRing.parse(KEY)
    router = DatabaseRouter(config(default_route=Route(upstream="ws://default.example.com")), keys)
    async with open_database(settings) as db:
        await add_charger(db, "CP-1", Route(upstream="ws://one.example.com"), keys=None)
        await add_charger(db, "CP-2", Route(upstream="ws://two.example.com"), keys=None)
        await router.refresh(db)  # the first look is a full load
        assert len(router) == 2
        await remove_charger(db, "CP-1")
        await add_charger(db, "CP-3", managed(), keys=keys)  # same count as before: still noticed
        await db.execute(
            "UPDATE chargers SET upstream = 'ws://moved.example.com' WHERE identity = 'CP-2'"
        )
        await router.refresh(db)
    assert router.lookup("CP-1") == Route(upstream="ws://default.example.com")
    assert router.lookup("CP-2") == Route(upstream="ws://moved.example.com")
    assert router.lookup("CP-3") == managed()
    assert len(router) == 2


async def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def test_run_keeps_the_snapshot_fresh_in_the_background(settings: DatabaseSettings) -> None:
    router = DatabaseRouter(config(), None)
    async with open_database(settings) as db:
        await add_charger(db, "CP-1", Route(upstream="ws://one.example.com"), keys=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(router.run, db)
            assert router.lookup("CP-1") is not None  # loaded before `started`
            await add_charger(db, "CP-2", Route(upstream="ws://two.example.com"), keys=None)
            router.refresh_soon()
            await wait_for(lambda: router.lookup("CP-2") is not None)
            await remove_charger(db, "CP-1")
            await wait_for(lambda: router.lookup("CP-1") is None)
            nursery.cancel_scope.cancel()


async def test_a_secret_the_key_cannot_open_refuses_that_charger_only(
    settings: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_database(settings) as db:
        await add_charger(db, "CP-1", managed(), keys=KeyRing.parse(KEY))
        await add_charger(db, "CP-2", Route(upstream="ws://two.example.com"), keys=None)
        for keys in (KeyRing.parse(generate_key()), None):
            router = DatabaseRouter(
                config(default_route=Route(upstream="ws://default.example.com")), keys
            )
            with caplog.at_level(logging.ERROR, logger="proxy.registry"):
                await router.reload(db)
                await router.refresh(db)  # the same problem is logged once
            assert router.lookup("CP-1") is None
            assert router.lookup("CP-2") == Route(upstream="ws://two.example.com")
            [record] = caplog.records
            assert record.identity == "CP-1"  # type: ignore[attr-defined]
            assert SECRET not in caplog.text and KEY not in caplog.text
            caplog.clear()


async def test_refresh_errors_keep_the_last_snapshot(
    settings: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    router = DatabaseRouter(config(), None)
    async with open_database(settings) as db:
        await add_charger(db, "CP-1", Route(upstream="ws://one.example.com"), keys=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(router.run, db)
            await db.execute("ALTER TABLE chargers RENAME TO chargers_away")
            with caplog.at_level(logging.WARNING, logger="proxy.registry"):
                await wait_for(lambda: "refresh failed" in caplog.text)
            assert router.lookup("CP-1") is not None
            nursery.cancel_scope.cancel()
        await db.execute("ALTER TABLE chargers_away RENAME TO chargers")


async def test_router_start_fails_when_the_registry_cannot_be_read(
    settings: DatabaseSettings,
) -> None:
    async with open_database(settings) as db:
        await db.execute(
            "DROP TABLE chargers CASCADE"
        )  # with what refers to it (partner registrations)
        with pytest.raises(asyncpg.UndefinedTableError):
            await DatabaseRouter(config(), None).run(db)
