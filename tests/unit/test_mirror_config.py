"""Mirrors in the configuration file: read from TOML, and refused when they cannot work."""

from __future__ import annotations

import pytest

from proxy.runtime.config import ConfigError, Mirror, load_config

ROUTE = """
[chargers."CP-1"]
upstream = "ws://127.0.0.1:9001/ocpp"
"""


def test_a_route_reads_its_mirrors_from_an_array_of_tables(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(
        ROUTE
        + """
[[chargers."CP-1".mirrors]]
url = "wss://mirror.example.com/ocpp"
allow = ["TriggerMessage"]
overflow = "pause"

[[chargers."CP-1".mirrors]]
url = "ws://127.0.0.1:9002/ocpp"
"""
    )
    mirrors = load_config(path).chargers["CP-1"].mirrors
    assert mirrors == (
        Mirror(url="wss://mirror.example.com/ocpp", allow=("TriggerMessage",), overflow="pause"),
        Mirror(url="ws://127.0.0.1:9002/ocpp"),
    )
    assert mirrors[1].allow == () and mirrors[1].overflow == "drop_oldest"


@pytest.mark.parametrize(
    "table",
    [
        'url = "http://mirror.example.com/ocpp"',
        'url = "wss://user:secret@mirror.example.com/ocpp"',
        'url = "ws://m/ocpp"\nqueue = 0',
        'url = "ws://m/ocpp"\noverflow = "block"',
        'url = "ws://m/ocpp"\ncall_timeout = 0',
        'url = "ws://m/ocpp"\nusername = "only"',
        'url = "ws://m/ocpp"\nunknown = 1',
    ],
)
def test_a_mirror_that_cannot_work_is_refused_at_load(tmp_path, table):
    path = tmp_path / "proxy.toml"
    path.write_text(ROUTE + '\n[[chargers."CP-1".mirrors]]\n' + table + "\n")
    with pytest.raises(ConfigError):
        load_config(path)
