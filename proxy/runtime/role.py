"""Running the proxy role in one process: listeners, admin endpoint, signals.

SIGHUP reloads the configuration (routes and settings for new connections, and the listener's
TLS certificate, client CA and CRL for new handshakes; a bad file is logged and the old
configuration kept); SIGTERM and SIGINT shut down gracefully (see
`ProxyServer.shutdown`). The process raises its open-file limit to the hard limit at start and
logs and exports how many chargers that allows (`ere_proxy_charger_capacity`: each link holds two
sockets), and exports the expiry of the listener's certificate and client CA bundle (at start and
after each reload).
"""

from __future__ import annotations

import base64
import gc
import logging
import os
import resource
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import trio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.capture.journal import Journal
from proxy.capture.orphans import close_orphans_periodically
from proxy.capture.spill import SpillLog
from proxy.capture.store_process import StoreProcess
from proxy.forward.listener import (
    ServerTls,
    listening_port,
    open_listener,
    reload_certificates,
    server_tls_context,
)
from proxy.forward.server import ProxyServer
from proxy.outbox.store import OutboxStore
from proxy.routing.auth import CredentialVerifier
from proxy.routing.registry.errors import SecretKeyError
from proxy.routing.registry.router import DatabaseRouter
from proxy.routing.registry.sealing import KeyRing, key_id
from proxy.routing.router import StaticRouter
from proxy.runtime.certificates import pem_bundle_not_after, pem_file_not_after
from proxy.runtime.config import Config, ConfigError, load_config
from proxy.runtime.http_admin import AdminServer, metrics_url
from proxy.runtime.metrics import JournalCollector, OutboxCollector, ProxyMetrics
from proxy.store.db import DATABASE_ERRORS, Database, open_database

log = logging.getLogger("proxy.role")

# File descriptors kept for the listener, admin, logs, DNS and the database.
_RESERVED_FDS = 64


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def charger_capacity(fd_limit: int) -> int:
    return max(0, (fd_limit - _RESERVED_FDS) // 2)


async def run_proxy_role(
    config_path: Path | None,
    config: Config,
    worker: int = 0,
    *,
    task_status: trio.TaskStatus[ProxyServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation); `task_status.started` gets the server.

    With capture, the registry or the outbox on, the database (an embedded server unless a DSN is
    configured) is opened first and closed last, so the journal and the outbox can store what the
    links hand them until they are gone.
    """
    fd_limit = raise_fd_limit()
    log.info(
        "proxy starting",
        extra={"fd_limit": fd_limit, "max_chargers": charger_capacity(fd_limit), "worker": worker},
    )
    metrics = ProxyMetrics()
    metrics.charger_capacity.set(charger_capacity(fd_limit))
    async with AsyncExitStack() as stack:
        db = journal = outbox = None
        if config.capture.enabled or config.registry.enabled or config.outbox.enabled:
            db = await stack.enter_async_context(open_database(config.database))
        if db is not None and config.capture.enabled:
            journal = await stack.enter_async_context(open_journal(config, worker, db, metrics))
        if db is not None and config.outbox.enabled:
            outbox = await stack.enter_async_context(open_outbox(config, db))
        router: StaticRouter | DatabaseRouter = StaticRouter(config)
        if db is not None and config.registry.enabled:
            try:
                keys = KeyRing.from_env(config.registry.secret_key_env)
            except SecretKeyError as exc:
                raise ConfigError(str(exc)) from None
            router = DatabaseRouter(config, keys)
        # What start-up allocated lives as long as the process: keep it out of the collector's
        # full passes, which otherwise stall forwarding for tens of milliseconds.
        gc.freeze()
        await _serve(config_path, config, worker, metrics, journal, outbox, router, db, task_status)
    log.info("proxy stopped")


@asynccontextmanager
async def open_journal(
    config: Config, worker: int, db: Database, metrics: ProxyMetrics
) -> AsyncIterator[Journal]:
    """The worker's journal, running, with its own spill log and store process; on exit everything
    left is on disk."""
    directory = Path(config.database.data_dir) / "spill" / f"worker-{worker}"
    spill = await trio.to_thread.run_sync(
        partial(
            SpillLog,
            directory,
            max_bytes=config.capture.spill_max_bytes,
            max_buffered_bytes=config.capture.spill_buffer_bytes,
        )
    )
    try:
        journal = Journal(spill, capacity=config.capture.queue_events)
        metrics.registry.register(JournalCollector(journal, config.capture.spill_max_bytes))
        store = StoreProcess(config.database, db.dsn, log_level=config.log.level, worker=worker)
        async with store, trio.open_nursery() as nursery:
            await nursery.start(journal.run, store)
            await nursery.start(
                close_orphans_periodically, db, config.capture.orphan_after, DATABASE_ERRORS
            )
            yield journal
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(spill.close)


@asynccontextmanager
async def open_outbox(config: Config, db: Database) -> AsyncIterator[OutboxStore]:
    """The outbox store, with its writer running until the links are gone."""
    store = OutboxStore(db, config.outbox)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()


async def _serve(
    config_path: Path | None,
    config: Config,
    worker: int,
    metrics: ProxyMetrics,
    journal: Journal | None,
    outbox: OutboxStore | None,
    router: StaticRouter | DatabaseRouter,
    db: Database | None,
    task_status: trio.TaskStatus[ProxyServer],
) -> None:
    verifier = load_credential_verifier(config) if outbox is not None else None
    server = ProxyServer(config, router, metrics, journal, outbox, verifier)
    if outbox is not None:
        metrics.registry.register(OutboxCollector(outbox.budget, server.relays))
    tls = server_tls_context(config.proxy)
    export_certificate_expiry(metrics, config)
    listener = open_listener(
        config.proxy, reuse_port=config.proxy.workers > 1, tls=tls, metrics=metrics
    )
    admin = AdminServer(metrics.registry, lambda: server.accepting)
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            if isinstance(router, DatabaseRouter):
                await nursery.start(router.run, db)  # the registry is loaded before we listen
            await nursery.start(server.run, [listener])
            if config.proxy.gc_freeze_interval:
                nursery.start_soon(freeze_long_lived, config.proxy.gc_freeze_interval)
            admin_port = config.admin.port + worker if config.admin.port else 0
            admin_listeners = await nursery.start(admin.serve, config.admin.host, admin_port)
            log.info(
                "proxy listening",
                extra={
                    "host": config.proxy.host,
                    "port": listening_port(listener),
                    "metrics": metrics_url(config.admin.host, admin_listeners),
                },
            )
            task_status.started(server)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reload_config(config_path, router, server, tls)
                    if isinstance(router, DatabaseRouter):
                        router.refresh_soon()
                    continue
                log.info("shutting down", extra={"signal": signal.Signals(signum).name})
                server.shutdown()
                break
            await server.stopped.wait()  # the admin endpoint stays up while links drain
            nursery.cancel_scope.cancel()


_VERIFIER_PURPOSE = b"ere-proxy credential verifier"
_VERIFIER_KEY_FILE = "verifier.key"


def load_credential_verifier(config: Config) -> CredentialVerifier:
    """The key of the digests that let passthrough chargers in while their back-office is down.

    Derived from the registry's secret keys (`ERE_PROXY_SECRET_KEY`) when they are set: every
    worker and node that shares the database then shares the key. Otherwise a key of this
    machine, created on first use in `<data_dir>/verifier.key` (0600): enough for one machine;
    a fleet of nodes must set the secret key, or a charger admitted on one node cannot be
    admitted offline on another (it is refused, never let in without proof).
    """
    try:
        keys = KeyRing.from_env(config.registry.secret_key_env)
    except SecretKeyError as exc:
        raise ConfigError(str(exc)) from None
    if keys is not None:
        return CredentialVerifier(keys.derive(_VERIFIER_PURPOSE))
    path = Path(config.database.data_dir) / _VERIFIER_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # written aside and linked into place: a worker never reads half a key
        draft = path.with_name(f"{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(base64.b64encode(os.urandom(32)) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another worker was first: its key is the one
        finally:
            draft.unlink()
    if config.database.dsn:
        log.warning(
            "passthrough chargers are admitted offline only on this node: set the secret key "
            "environment variable on every node to share their verifiers",
            extra={"key_file": str(path)},
        )
    text = path.read_text().strip()
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:  # e.g. read while another worker was still writing it: never a short key
        raise ConfigError(f"{path} must hold base64 of 32 bytes; delete it to have a new one made")
    return CredentialVerifier(
        {key_id(key): HKDF(hashes.SHA256(), 32, None, _VERIFIER_PURPOSE).derive(key)}
    )


async def freeze_long_lived(interval: float) -> None:
    """Every `interval` seconds, collect the young generations and freeze what survived.

    A worker holds thousands of links for hours, and a full collection walks all their objects
    (up to 530 ms with 8,000 chargers, stalling every link of the worker; with a 10 s interval the
    longest was 86 ms, while the fleet connected). Frozen objects are skipped by every pass; they
    are still freed by reference counting when they die, so only garbage in reference cycles
    among them would stay (links that end, closed or replaced, leave none); a leak would show in
    `process_resident_memory_bytes`. The frozen count is not exported: `gc.get_freeze_count()`
    walks every frozen object (15 ms with 1,000 chargers). Cancellation: between passes.
    """
    while True:
        await trio.sleep(interval)
        gc.collect(1)  # the young generations: what dies young is not frozen
        gc.freeze()


def export_certificate_expiry(metrics: ProxyMetrics, config: Config) -> None:
    """The not-after times of the listener's certificate and client CA bundle, when configured."""
    if config.proxy.tls_cert is not None:
        metrics.listener_certificate(pem_file_not_after(config.proxy.tls_cert))
    if config.proxy.tls_client_ca is not None:
        metrics.listener_certificate(pem_bundle_not_after(config.proxy.tls_client_ca), "client_ca")


def reload_config(
    config_path: Path | None,
    router: StaticRouter | DatabaseRouter,
    server: ProxyServer,
    tls: ServerTls | None,
) -> None:
    """SIGHUP: routes and settings for new connections, and the listener's TLS files (certificate,
    client CA, CRL; the dials' files are reread as well, `Dialer.reconfigure`)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        log.error("reload failed; keeping the running configuration", extra={"error": str(exc)})
        return
    router.replace(config)
    server.reconfigure(config)
    if reload_certificates(tls, config.proxy):
        export_certificate_expiry(server.metrics, config)
    log.info("configuration reloaded", extra={"chargers": len(config.chargers)})
