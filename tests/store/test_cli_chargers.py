"""`ere-proxy chargers add|list|remove|rotate-password|reseal` against a test database."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import trio

from proxy.cli import main as cli
from proxy.routing.auth import is_fast_hash, verify_password
from proxy.routing.registry.records import get_charger
from proxy.routing.registry.sealing import KeyRing, generate_key
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database

KEY = generate_key()
SECRET = "upstream-Secret-42"
FROM_ENV = ("--upstream-password-env", "CSMS_PASSWORD")


@pytest.fixture
def config_file(tmp_path: Path, database_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cli, "setup_logging", lambda *args: None)  # keep pytest's log handlers
    monkeypatch.setenv("TEST_REGISTRY_KEY", KEY)
    monkeypatch.setenv("CSMS_PASSWORD", SECRET)
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'[database]\ndsn = "{database_dsn}"\n\n'
        '[registry]\npublic_url = "wss://proxy.example.com/ocpp"\nsecret_key_env = "TEST_REGISTRY_KEY"\n'
    )
    return path


class Cli:
    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config, self.capsys = config, capsys

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        action, *rest = argv
        code = await trio.to_thread.run_sync(
            cli.main, ["chargers", action, "--config", str(self.config), *rest]
        )
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def run(config_file: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(config_file, capsys)


def fields(output: str) -> dict[str, str]:
    """The `key: value` lines of the credential output."""
    return {
        key: value.strip()
        for key, _, value in (line.partition(":") for line in output.splitlines())
    }


async def stored_hash(settings: DatabaseSettings, identity: str) -> str:
    async with open_database(settings) as db:
        charger = await get_charger(db, identity)
    assert charger is not None and charger.password_hash is not None
    return charger.password_hash


async def test_add_managed_prints_url_and_credentials_once(
    run: Cli, settings: DatabaseSettings
) -> None:
    code, out, err = await run(
        "add",
        "CP 1",
        "--upstream",
        "wss://csms.example.com/ocpp",
        "--managed",
        "--upstream-username",
        "cp1",
        "--upstream-password-env",
        "CSMS_PASSWORD",
    )
    assert code == 0, err
    shown = fields(out)
    assert shown["ocpp_url"] == "wss://proxy.example.com/ocpp/CP%201"
    assert shown["username"] == "CP 1" and shown["auth"] == "managed"
    assert len(shown["password"]) == 32
    assert "shown only this once" in err and SECRET not in out + err
    stored = await stored_hash(settings, "CP 1")
    assert verify_password(shown["password"], stored)
    assert is_fast_hash(stored)  # a generated password: checked at once, never behind a flood
    async with open_database(settings) as db:
        charger = await get_charger(db, "CP 1")
    assert charger is not None and charger.route(KeyRing.parse(KEY)).upstream_password == SECRET

    code, out, err = await run("list")
    assert code == 0 and "CP 1" in out and "sealed" in out
    assert shown["password"] not in out and SECRET not in out


async def test_add_passthrough_and_json_output(run: Cli) -> None:
    code, out, _ = await run("add", "CP-2", "--upstream", "ws://csms.example.com/ocpp", "--json")
    assert code == 0
    assert json.loads(out) == {
        "identity": "CP-2",
        "ocpp_url": "wss://proxy.example.com/ocpp/CP-2",
        "auth": "passthrough",
    }
    code, out, _ = await run(
        "add", "CP-3", "--upstream", "ws://csms.example.com/ocpp", "--managed", "--json"
    )
    assert code == 0 and set(json.loads(out)) == {
        "identity",
        "ocpp_url",
        "auth",
        "username",
        "password",
    }
    code, out, _ = await run("list", "--json")
    listed = json.loads(out)
    assert [c["identity"] for c in listed] == ["CP-2", "CP-3"]
    assert (
        listed[1]["ocpp_url"] == "wss://proxy.example.com/ocpp/CP-3"
        and listed[1]["upstream_secret"] is False
    )
    assert not any("password" in key for c in listed for key in c)


async def test_upstream_password_from_stdin(
    run: Cli, settings: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET + "\n"))
    code, _out, err = await run(
        "add", "CP-1", "--upstream", "ws://a", "--managed", "--upstream-password-stdin"
    )
    assert code == 0, err
    async with open_database(settings) as db:
        charger = await get_charger(db, "CP-1")
    assert charger is not None and charger.route(KeyRing.parse(KEY)).upstream_password == SECRET


async def test_rotate_password_invalidates_the_old_one(
    run: Cli, settings: DatabaseSettings
) -> None:
    _, out, _ = await run("add", "CP-1", "--upstream", "ws://a.example.com", "--managed")
    old = fields(out)["password"]
    code, out, err = await run("rotate-password", "CP-1")
    assert code == 0 and "shown only this once" in err
    new = fields(out)["password"]
    assert new != old
    stored = await stored_hash(settings, "CP-1")
    assert verify_password(new, stored) and not verify_password(old, stored)
    assert is_fast_hash(stored)
    code, out, _ = await run("rotate-password", "CP-1", "--json")
    assert code == 0 and verify_password(
        json.loads(out)["password"], await stored_hash(settings, "CP-1")
    )


async def test_remove(run: Cli) -> None:
    await run("add", "CP-1", "--upstream", "ws://a.example.com")
    assert (await run("remove", "CP-1"))[:2] == (0, "removed charger CP-1\n")
    _code, out, _ = await run("list", "--json")
    assert json.loads(out) == []


async def test_conflicts_and_unknown_chargers_exit_1(run: Cli) -> None:
    await run("add", "CP-1", "--upstream", "ws://a.example.com")
    for argv, message in (
        (("add", "CP-1", "--upstream", "ws://b.example.com"), "charger 'CP-1' already exists"),
        (("remove", "CP-9"), "no charger 'CP-9'"),
        (("rotate-password", "CP-9"), "no charger 'CP-9'"),
        (("rotate-password", "CP-1"), "passthrough"),
    ):
        code, out, err = await run(*argv)
        assert (code, out) == (1, ""), argv
        assert message in err


async def test_usage_errors_exit_2(run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    for argv, message in (
        (("add", "CP:1", "--upstream", "ws://a.example.com"), "must not contain ':'"),
        (("add", "x" * 49, "--upstream", "ws://a.example.com"), "1 to 48 characters"),
        (("add", "CP-1", "--upstream", "https://a.example.com"), "ws:// or wss://"),
        (("add", "CP-1", "--upstream", "ws://a", "--upstream-username", "u"), "need --managed"),
        (
            ("add", "CP-1", "--upstream", "ws://a", "--managed", "--upstream-password-env", "NOPE"),
            "NOPE is not set",
        ),
        (("remove", "CP:1"), "must not contain ':'"),
    ):
        code, out, err = await run(*argv)
        assert (code, out) == (2, ""), argv
        assert message in err
    with pytest.raises(SystemExit) as exited:
        await run("add", "CP-1")  # --upstream missing
    assert exited.value.code == 2
    code, out, _ = await run("list", "--json")
    assert json.loads(out) == []


async def test_a_secret_without_the_key_variable_is_refused(
    run: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_REGISTRY_KEY")
    code, out, err = await run("add", "CP-1", "--upstream", "ws://a", "--managed", *FROM_ENV)
    assert (code, out) == (2, "") and "TEST_REGISTRY_KEY" in err and SECRET not in err
    assert (await run("add", "CP-1", "--upstream", "ws://a", "--managed"))[
        0
    ] == 0  # no secret: no key needed
    monkeypatch.setenv("TEST_REGISTRY_KEY", "not-a-key")
    code, _, err = await run("add", "CP-2", "--upstream", "ws://a", "--managed", *FROM_ENV)
    assert code == 2 and "TEST_REGISTRY_KEY must be base64" in err
    assert (await run("list"))[0] == 0  # listing needs no key


async def test_generate_key_and_reseal(
    run: Cli, monkeypatch: pytest.MonkeyPatch, settings: DatabaseSettings
) -> None:
    await run(
        "add",
        "CP-1",
        "--upstream",
        "ws://a",
        "--managed",
        "--upstream-password-env",
        "CSMS_PASSWORD",
    )
    code, out, _ = await run("generate-key")
    new_key = out.strip()
    assert code == 0 and KeyRing.parse(new_key).primary_id != KeyRing.parse(KEY).primary_id
    monkeypatch.setenv("TEST_REGISTRY_KEY", f"{new_key},{KEY}")
    code, out, _ = await run("reseal")
    assert code == 0 and out.startswith("resealed 1 upstream secret(s)")
    async with open_database(settings) as db:
        charger = await get_charger(db, "CP-1")
    assert charger is not None and charger.route(KeyRing.parse(new_key)).upstream_password == SECRET


FILE_ROUTES = (
    '\n[chargers."CP-FILE"]\nupstream = "ws://file.example.com/ocpp"\n'
    '\n[chargers."CP-BOTH"]\nupstream = "ws://file.example.com/ocpp"\n'
    'auth = "managed"\npassword_hash = "$scrypt$n=2,r=8,p=1$c2FsdA$aGFzaA"\n'
    'upstream_password = "from-the-file"\n'
)


async def test_list_shows_the_file_routes_too_with_their_source(run: Cli) -> None:
    with run.config.open("a") as config:
        config.write(FILE_ROUTES)
    await run("add", "CP-BOTH", "--upstream", "ws://registry.example.com/ocpp")
    await run("add", "CP-REG", "--upstream", "ws://registry.example.com/ocpp")

    code, out, _ = await run("list", "--json")
    listed = json.loads(out)
    assert code == 0
    assert [(c["identity"], c["source"], c["in_effect"]) for c in listed] == [
        ("CP-BOTH", "registry", True),
        ("CP-BOTH", "config", False),  # the registry entry wins
        ("CP-FILE", "config", True),
        ("CP-REG", "registry", True),
    ]
    assert listed[2]["ocpp_url"] == "wss://proxy.example.com/ocpp/CP-FILE"
    assert "from-the-file" not in out and "scrypt" not in out

    code, out, _ = await run("list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["IDENTITY", "SOURCE", "AUTH"]
    assert [line.split()[0] for line in lines[1:5]] == ["CP-BOTH", "CP-BOTH", "CP-FILE", "CP-REG"]
    sources = [line[lines[0].index("SOURCE") :].split("  ")[0] for line in lines[1:5]]
    assert sources == ["registry", "config (registry wins)", "config", "registry"]
    assert "in config" in lines[2]  # the file's route carries an upstream secret
    assert lines[-1] == "other identities are refused (404)"

    with run.config.open("a") as config:
        config.write('\n[default_route]\nupstream = "ws://any.example.com/ocpp"\n')
    _code, out, _ = await run("list")
    assert (
        out.splitlines()[-1] == "other identities go to ws://any.example.com/ocpp ([default_route])"
    )


async def test_adding_a_charger_the_file_also_routes_warns_that_the_registry_wins(
    run: Cli,
) -> None:
    with run.config.open("a") as config:
        config.write(FILE_ROUTES)
    code, _out, err = await run("add", "CP-FILE", "--upstream", "ws://registry.example.com/ocpp")
    assert code == 0
    assert '[chargers."CP-FILE"] too; the registry entry wins' in err
    code, _out, err = await run("add", "CP-NEW", "--upstream", "ws://registry.example.com/ocpp")
    assert code == 0 and err == ""


async def test_without_public_url_no_localhost_url_is_given_to_a_charger(
    run: Cli, database_dsn: str
) -> None:
    run.config.write_text(f'[database]\ndsn = "{database_dsn}"\n')  # [proxy] host: 127.0.0.1
    code, out, err = await run("add", "CP-1", "--upstream", "ws://a.example.com", "--managed")
    assert code == 0
    assert fields(out)["ocpp_url"] == "(unknown: see [registry] public_url)"
    assert "ere-proxy: [registry] public_url is not set" in err
    assert "127.0.0.1" not in out + err and "localhost" not in out
    code, out, err = await run("add", "CP-2", "--upstream", "ws://a.example.com", "--json")
    assert code == 0 and json.loads(out)["ocpp_url"] is None and "public_url is not set" in err
    _code, out, _ = await run("list", "--json")
    assert [c["ocpp_url"] for c in json.loads(out)] == [None, None]

    # a proxy that listens on an address chargers can reach: its URL is derived from it
    run.config.write_text(
        f'[database]\ndsn = "{database_dsn}"\n[proxy]\nhost = "192.0.2.7"\nport = 8080\n'
    )
    code, out, err = await run("rotate-password", "CP-1")
    assert code == 0 and fields(out)["ocpp_url"] == "ws://192.0.2.7:8080/ocpp/CP-1"
    assert "public_url" not in err
