"""Sans-IO tests of credentials, routing and configuration loading."""

from __future__ import annotations

import base64

import pytest

from proxy.routing.auth import (
    PasswordCache,
    basic_header,
    decide_auth,
    hash_password,
    parse_basic,
    verify_password,
)
from proxy.routing.router import StaticRouter, upstream_url
from proxy.runtime.config import Config, ConfigError, Route, load_config


def test_password_hash_verifies_only_the_right_password():
    encoded = hash_password("s3cret")
    assert encoded.startswith("scrypt$")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert hash_password("s3cret") != encoded  # salted


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "scrypt$x$8$1$AA==$AA==",
        "scrypt$14$8$1$!!$AA==",
        "bcrypt$1$2$3$4$5",
        "scrypt$40$8$1$AA==$AA==",
    ],
)
def test_malformed_hashes_never_match(encoded):
    assert not verify_password("anything", encoded)


@pytest.mark.parametrize(
    "header, expected",
    [
        (basic_header("CP-1", "pw:with:colons"), ("CP-1", "pw:with:colons")),
        (b"basic " + base64.b64encode(b"a:b"), ("a", "b")),
        (b"Bearer abc", None),
        (b"Basic !!!", None),
        (b"Basic " + base64.b64encode(b"no-colon"), None),
        (b"Basic " + base64.b64encode(b"\xff:x"), None),
        (None, None),
    ],
)
def test_parse_basic(header, expected):
    assert parse_basic(header) == expected


def test_passthrough_forwards_the_chargers_header_unchanged():
    route = Route(upstream="ws://up/ocpp")
    outcome = decide_auth(route, "CP-1", b"Basic whatever")
    assert outcome.status is None and outcome.upstream_authorization == b"Basic whatever"
    assert decide_auth(route, "CP-1", None).upstream_authorization is None


def test_managed_checks_identity_and_sends_the_configured_credential():
    route = Route(
        upstream="ws://up/ocpp", auth="managed", password_hash="h", upstream_password="up-pw"
    )
    ok = decide_auth(route, "CP-1", basic_header("CP-1", "pw"))
    assert ok.status is None and ok.password_to_verify == "pw"
    assert ok.upstream_authorization == basic_header("CP-1", "up-pw")
    assert decide_auth(route, "CP-1", basic_header("CP-2", "pw")).status == 401
    assert decide_auth(route, "CP-1", None).status == 401


def test_password_cache_remembers_without_holding_the_password():
    cache = PasswordCache(max_entries=2)
    cache.add(("a", "pw", "h"))
    assert ("a", "pw", "h") in cache and ("a", "other", "h") not in cache
    assert all(b"pw" not in key for key in cache._seen)
    cache.add(("b", "pw", "h"))
    cache.add(("c", "pw", "h"))
    assert ("a", "pw", "h") not in cache and ("c", "pw", "h") in cache


def test_router_uses_listed_routes_then_the_default():
    config = Config(chargers={"CP-1": Route(upstream="ws://one/ocpp")})
    router = StaticRouter(config)
    assert router.lookup("CP-1").upstream == "ws://one/ocpp"
    assert router.lookup("CP-2") is None
    router.replace(Config(default_route=Route(upstream="ws://two/")))
    assert router.lookup("CP-1").upstream == "ws://two/"


@pytest.mark.parametrize(
    "base, expected",
    [
        ("ws://csms:9001/ocpp", ("ws", "csms", 9001, "/ocpp/CP%201%2F2")),
        ("wss://csms/ocpp/", ("wss", "csms", 443, "/ocpp/CP%201%2F2")),
        ("ws://csms", ("ws", "csms", 80, "/CP%201%2F2")),
        ("ws://csms/x?tenant=7", ("ws", "csms", 80, "/x/CP%201%2F2?tenant=7")),
    ],
)
def test_upstream_url_appends_the_encoded_identity(base, expected):
    assert upstream_url(Route(upstream=base), "CP 1/2") == expected


def test_load_config_reads_toml(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(
        '[proxy]\nport = 9999\n[chargers."CP 1"]\nupstream = "wss://x/ocpp"\nauth = "managed"\npassword_hash = "h"\n'
    )
    config = load_config(path)
    assert config.proxy.port == 9999 and config.chargers["CP 1"].auth == "managed"
    assert config.default_route is None


@pytest.mark.parametrize(
    "text",
    [
        "[proxy]\nport = 'x'\n",
        "[proxy]\nunknown = 1\n",
        "[proxy]\ndefault_subprotocol = 'ocpp1.5'\n",
        "[proxy]\ntls_cert = 'c.pem'\n",
        '[chargers.a]\nupstream = "http://x"\n',
        '[chargers.a]\nupstream = "ws://x"\nauth = "managed"\n',
        '[chargers.a]\nupstream = "ws://x:80800/ocpp"\n',
        "[proxy]\nidle_timeout = -1\n",
        "[proxy]\nclose_timeout = 0\n",
        "[proxy]\ndrain_timeout = nan\n",
        "[proxy]\nmax_message_size = 0\n",
        "[proxy]\nworkers = 0\n",
        "[proxy]\nport = 70000\n",
        "[admin]\nport = -1\n",
        "[proxy]\nupstream_source_addresses = ['not-an-address']\n",
        "[proxy]\nupstream_source_addresses = ['127.0.0.1; rm -rf /']\n",
        "[proxy]\ngc_freeze_interval = -1\n",
        "[proxy]\ngc_freeze_interval = nan\n",
        "[ere]\npayout_minimum = 'ten'\n",
        "[ere]\npayout_minimum = '1.005'\n",
        "[ere]\npayout_minimum = '-1'\n",
        "[ere]\nclose_shards = 0\n",
        "[ere]\npoll_interval = 0\n",
        "[ere]\npipeline_refresh = nan\n",
        "[api]\nadmin_port = 70000\n",
        "[api]\nport = 8300\nadmin_port = 8300\n",
        "[database.embedded_settings]\nport = 5433\n",
        "[database.embedded_settings]\nlisten_addresses = '*'\n",
        "[database.embedded_settings]\nunix_socket_directories = '/tmp'\n",
        "[database.embedded_settings]\n'shared_buffers = 1GB' = 'x'\n",
        "[database.embedded_settings]\n'work_mem -c port' = '1'\n",
        "[database.embedded_settings]\nwork_mem = ['1MB']\n",
        "not toml [",
    ],
)
def test_invalid_config_is_a_clear_error(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(path)


@pytest.mark.parametrize(
    "upstream",
    [
        "ws://user:s3cret@csms.example/ocpp",
        "wss://s3cret@csms.example/ocpp",
        "ws://user:s3cret@[::1]:9000/ocpp",
    ],
)
def test_credentials_in_an_upstream_url_are_refused_without_being_echoed(tmp_path, upstream):
    # They would end up in logs, errors and the `upstream` label of the metrics.
    path = tmp_path / "creds.toml"
    path.write_text(f'[default_route]\nupstream = "{upstream}"\n')
    with pytest.raises(ConfigError, match="credentials") as refused:
        load_config(path)
    assert "s3cret" not in str(refused.value)


def test_embedded_settings_are_read_as_postgresql_conf_text(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(
        "[database.embedded_settings]\nshared_buffers = '1GB'\nmax_connections = 200\n"
        "random_page_cost = 1.1\nfsync = false\njit = true\n'auto_explain.log_min_duration' = 5\n"
    )
    assert load_config(path).database.embedded_server_settings() == {
        "shared_buffers": "1GB",
        "max_connections": "200",
        "random_page_cost": "1.1",
        "fsync": "off",
        "jit": "on",
        "auto_explain.log_min_duration": "5",
    }


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "absent.toml")
