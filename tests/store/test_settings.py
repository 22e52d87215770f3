"""The [database] table of the configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.runtime.config import ConfigError, DatabaseSettings, load_config


def test_defaults_mean_an_embedded_server_in_the_data_dir() -> None:
    settings = load_config(None).database
    data_dir = (
        "/var/lib/ere-proxy" if os.geteuid() == 0 else "data"
    )  # root: reachable by the server's user
    assert settings == DatabaseSettings(
        dsn="", data_dir=data_dir, pool_size=10, connect_timeout=10.0
    )


@pytest.mark.parametrize(
    "table, message",
    [
        ('dsn = "mysql://x/y"', "postgresql:// URL"),
        ("pool_size = 0", "pool_size"),
        ("connect_timeout = 0", "connect_timeout"),
        ('data_dir = ""', "data_dir"),
        ("colour = 1", "colour"),
    ],
)
def test_bad_database_settings_are_refused(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(f"[database]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
