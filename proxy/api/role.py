"""The partner API role: `ere-proxy api` serves the application on hypercorn's Trio worker.

The database is opened first (migrations applied) and closed last. Beside the server run the
webhook tasks: the scans that find events (`proxy.api.webhook_scans`) and the deliveries
(`proxy.api.webhook_delivery`), and housekeeping (`proxy.api.housekeeping`). With `[api]
admin_port` set, /metrics (`proxy.api.metrics`), /healthz and /readyz are served there, never on
the partner port; ready means serving and the database answering (the webhook backlog is read
from it every `_BACKLOG_SECONDS`). SIGHUP is ignored (the role has nothing to reload yet);
SIGTERM or SIGINT stops taking connections and lets requests under way finish (hypercorn's
graceful timeout), and deliveries under way a short grace; the admin endpoint answers (not
ready) until they are done. A port that cannot be bound is `CannotStart`. Once serving, what
is alive is frozen out of the garbage collector's full passes (`gc.freeze`): shorter pauses.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from proxy.api.app import create_app
from proxy.api.context import ApiContext
from proxy.api.housekeeping import run_housekeeping
from proxy.api.metrics import ApiMetrics, WebhookBacklog
from proxy.api.webhook_delivery import run_deliveries
from proxy.api.webhook_scans import run_scans
from proxy.runtime.config import ApiSettings, CannotStart, Config, DatabaseSettings
from proxy.runtime.http_admin import AdminServer, metrics_url
from proxy.store.connection import Connection
from proxy.store.db import Database, open_database

log = logging.getLogger("proxy.api")

__all__ = ["Serving", "open_api_database", "run_api_role", "serve_api", "serve_role"]

_GRACEFUL_SECONDS = 10.0
_BACKLOG_SECONDS = 10.0


def hypercorn_config(settings: ApiSettings, port: int | None = None) -> HypercornConfig:
    config = HypercornConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port if port is None else port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("proxy.api.server")
    config.graceful_timeout = _GRACEFUL_SECONDS
    config.include_server_header = False
    config.h11_max_incomplete_size = 16 * 1024  # request line and headers
    config.keep_alive_timeout = 30
    return config


async def serve_api(
    database: Connection,
    settings: ApiSettings,
    stop: trio.Event,
    *,
    context: ApiContext | None = None,
    metrics: ApiMetrics | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `stop` is set; `task_status.started` gets the bound addresses."""
    app = create_app(database, settings, context, metrics)
    try:
        await serve(
            app,  # type: ignore[arg-type]  # Starlette's ASGI types are looser than hypercorn's
            hypercorn_config(settings),
            shutdown_trigger=stop.wait,
            task_status=task_status,
        )
    except OSError as exc:
        raise CannotStart(
            f"cannot serve the partner API on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None


@dataclass(frozen=True)
class Serving:
    """Where a running api role is reached: the partner API's addresses, and its /metrics URL
    (None without `[api] admin_port`)."""

    binds: list[str]
    metrics: str | None


async def serve_role(
    db: Connection,
    settings: ApiSettings,
    stop: trio.Event,
    *,
    context: ApiContext | None = None,
    task_status: trio.TaskStatus[Serving] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The partner API, its admin endpoint and its background tasks, until `stop` is set and
    they are done; `task_status.started` gets where it serves."""
    context = context or ApiContext.bare()
    metrics = ApiMetrics()
    async with trio.open_nursery() as admin_nursery:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_api, context=context, metrics=metrics)
            binds = await nursery.start(serve, db, settings, stop)
            await metrics.backlog.refresh(db)
            metrics_at = None
            if settings.admin_port:
                admin = AdminServer(
                    metrics.registry, lambda: not stop.is_set() and metrics.backlog.database_ok
                )
                listeners = await admin_nursery.start(
                    admin.serve, settings.admin_host, settings.admin_port
                )
                metrics_at = metrics_url(settings.admin_host, listeners)
            scans = functools.partial(
                run_scans, interval=settings.webhook_scan_interval, metrics=metrics
            )
            nursery.start_soon(scans, db, stop)
            nursery.start_soon(run_deliveries, db, settings, context.keys, stop, metrics)
            housekeeping = functools.partial(run_housekeeping, metrics=metrics)
            nursery.start_soon(housekeeping, db, settings.idempotency_hours, stop)
            nursery.start_soon(_watch_backlog, metrics.backlog, db, stop)
            task_status.started(Serving(binds, metrics_at))
        admin_nursery.cancel_scope.cancel()


async def _watch_backlog(backlog: WebhookBacklog, db: Connection, stop: trio.Event) -> None:
    while True:
        with trio.move_on_after(_BACKLOG_SECONDS):
            await stop.wait()
            return
        await backlog.refresh(db)


def open_api_database(settings: DatabaseSettings) -> AbstractAsyncContextManager[Database]:
    """The database as the api role opens it: connections go back to the pool without a reset
    round trip (`lean_release`: the role's calls and transactions leave nothing in a session
    but what the end of a transaction ends: SET LOCAL, transaction-level advisory locks)."""
    return open_database(settings, lean_release=True)


async def run_api_role(config: Config) -> None:
    """Serve the partner API until SIGTERM/SIGINT."""
    stop = trio.Event()
    context = ApiContext.from_config(config)
    async with open_api_database(config.database) as db:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                serving = await nursery.start(
                    functools.partial(serve_role, context=context), db, config.api, stop
                )
                # What is alive once serving (modules, the application, its schemas) lives as
                # long as the process: kept out of the collector's full passes, which otherwise
                # walk it all and pause every request for tens of milliseconds.
                gc.freeze()
                log.info(
                    "partner API listening",
                    extra={"bind": serving.binds, "metrics": serving.metrics},
                )
                async for signum in signals:
                    if signum == signal.SIGHUP:  # `run` passes it to every role
                        log.info("SIGHUP: the partner API has nothing to reload")
                        continue
                    log.info("shutting down", extra={"signal": signal.Signals(signum).name})
                    stop.set()
                    break
    log.info("partner API stopped")
