"""Where the key of the passthrough verifiers comes from: the secret key, or a 0600 file of the machine."""

from __future__ import annotations

import base64
import os
import stat

import msgspec
import pytest

from proxy.routing.auth import basic_header
from proxy.runtime.config import Config, ConfigError, DatabaseSettings, RegistrySettings
from proxy.runtime.role import load_credential_verifier

HEADER = basic_header("CP-1", "pw")


def config(data_dir, env: str = "ERE_TEST_VERIFIER_KEY") -> Config:
    return Config(
        database=DatabaseSettings(data_dir=str(data_dir)),
        registry=RegistrySettings(secret_key_env=env),
    )


def test_without_a_secret_key_a_machine_key_is_made_once_readable_by_the_owner_only(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("ERE_TEST_VERIFIER_KEY", raising=False)
    old_umask = os.umask(0)  # whatever the umask says
    try:
        first = load_credential_verifier(config(tmp_path))
    finally:
        os.umask(old_umask)
    key_file = tmp_path / "verifier.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["verifier.key"]  # no draft left behind
    again = load_credential_verifier(config(tmp_path))  # the next start (or another worker)
    assert again.matches("CP-1", HEADER, first.digest("CP-1", HEADER))


def test_the_secret_key_is_used_when_set_so_every_node_shares_the_verifiers(tmp_path, monkeypatch):
    monkeypatch.setenv("ERE_TEST_VERIFIER_KEY", base64.b64encode(b"k" * 32).decode())
    node_a = load_credential_verifier(config(tmp_path / "a"))
    node_b = load_credential_verifier(config(tmp_path / "b"))
    assert node_b.matches("CP-1", HEADER, node_a.digest("CP-1", HEADER))
    assert not (tmp_path / "a" / "verifier.key").exists()


@pytest.mark.parametrize("content", ["", "not base64 at all", base64.b64encode(b"short").decode()])
def test_a_damaged_key_file_stops_the_start_with_a_clear_error(tmp_path, monkeypatch, content):
    monkeypatch.delenv("ERE_TEST_VERIFIER_KEY", raising=False)
    (tmp_path / "verifier.key").write_text(content)
    with pytest.raises(ConfigError, match="verifier.key"):
        load_credential_verifier(config(tmp_path))


def test_a_bad_secret_key_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ERE_TEST_VERIFIER_KEY", "too-short")
    with pytest.raises(ConfigError):
        load_credential_verifier(msgspec.structs.replace(config(tmp_path)))
