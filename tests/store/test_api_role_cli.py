"""`ere-proxy partners keys create|list|revoke` and `ere-proxy api` as a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import trio

from proxy.api.app import OPENAPI_URL
from proxy.store.db import open_database
from testkit.ere_admin import Admin, partner_args
from testkit.partner_api import call
from testkit.ports import free_port
from testkit.waiting import until


async def test_keys_are_created_shown_once_listed_and_revoked(settings):
    admin = Admin(settings)
    await admin.ok(*partner_args("acme"))
    code, out, err = await admin("partners", "keys", "create", "acme", "--scopes", "customers:read")
    assert code == 0 and "shown only this once" in err
    key = out.strip()
    assert key.startswith("ere_")
    key_id = key.split("_")[1]
    async with open_database(settings) as db:
        stored = await db.fetchval("SELECT secret_hash FROM partner_api_keys")
    assert key.split("_", 2)[2] not in stored
    (listed,) = await admin.json("partners", "keys", "list", "acme")
    assert (listed["key_id"], listed["scopes"], listed["revoked_at"]) == (
        key_id,
        ["customers:read"],
        None,
    )
    assert "secret_hash" not in listed
    assert (await admin("partners", "keys", "revoke", key_id))[0] == 0
    code, _, err = await admin("partners", "keys", "revoke", key_id)
    assert code == 2 and "revoked already" in err
    for argv in (
        ("create", "acme", "--scopes", "customers:read,everything"),
        ("create", "nobody", "--scopes", "customers:read"),
        ("list", "nobody"),
        ("revoke", "nosuchkey"),
    ):
        code, _, err = await admin("partners", "keys", *argv)
        assert code == 2 and err.startswith("ere-proxy: "), (argv, err)


async def test_the_api_command_serves_until_sigterm(settings, tmp_path):
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[database]\ndsn = "{settings.dsn}"\ndata_dir = "{tmp_path}"\n'
        f'[api]\nenabled = true\nport = {port}\n[log]\nlevel = "info"\n'
    )
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "api", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=os.environ.copy(),
        )
    try:
        await until(lambda: b"partner API listening" in stderr.read_bytes(), "API up", 60, 0.1)
        reply = await call(port, "GET", OPENAPI_URL)
        assert reply.status == 200 and "/v1/customers" in json.loads(reply.body)["paths"]
        assert (await call(port, "GET", "/v1/customers")).status == 401
        process.send_signal(signal.SIGHUP)  # ignored: `run` passes it on to every role
        process.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert b"Traceback" not in stderr.read_bytes()
