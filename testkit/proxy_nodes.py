"""Proxy nodes sharing one PostgreSQL, each a process on a loopback address of its own.

Like nodes of a fleet, every node has the same configuration (the same charger and admin ports,
session capture and the outbox on, one `[database] dsn`) but its own address and data directory,
and all share `ERE_PROXY_SECRET_KEY`, so a charger admitted on one node can prove itself offline
on another. `start_node` starts one and waits for its /readyz; the caller stops it.
"""

from __future__ import annotations

import os
from pathlib import Path

from proxy.routing.registry.sealing import generate_key
from testkit.engines import with_engine
from testkit.proxy_process import CONFIG, ProxyProcess, spawn_proxy

SECRET_KEY = generate_key()  # one key for every node this process starts

NODE_SETTINGS = {
    "[capture]\nenabled = false\n": "[capture]\nenabled = true\n",
    "[outbox]\nenabled = false\n": "[outbox]\nenabled = true\nredial_min = 0.5\nredial_max = 2.0\n",
}


def node_config(host: str, dsn: str, data_dir: Path, extra: str = "") -> str:
    """The configuration template of a node on `host` ({port}, {admin_port}, {upstream_port} left
    to fill in); `extra` is appended to its `[proxy]` table."""
    text = with_engine(CONFIG).replace('host = "127.0.0.1"', f'host = "{host}"')
    for old, new in NODE_SETTINGS.items():
        text = text.replace(old, new)
    text = text.replace("[admin]\n", f"{extra}\n[admin]\n", 1)
    return text + f'\n[database]\ndsn = "{dsn}"\ndata_dir = "{data_dir}"\n'


def start_node(
    directory: Path,
    name: str,
    host: str,
    ports: tuple[int, int, int],
    dsn: str,
    extra: str = "",
) -> ProxyProcess:
    """Start node `name` on `host` with (charger port, admin port, upstream port), ready.

    Its configuration, data directory and stderr are `name`.toml, `name`-data/ and
    `name`.stderr in `directory` (a restarted node gets its data directory back).
    """
    port, admin_port, upstream_port = ports
    config = directory / f"{name}.toml"
    template = node_config(host, dsn, directory / f"{name}-data", extra)
    config.write_text(
        template.format(port=port, admin_port=admin_port, upstream_port=upstream_port)
    )
    return spawn_proxy(
        config,
        directory / f"{name}.stderr",
        (port, admin_port, upstream_port),
        host=host,
        append=True,
        env={**os.environ, "ERE_PROXY_SECRET_KEY": SECRET_KEY},
    )
