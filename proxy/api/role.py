"""The partner API role: `ere-proxy api` serves the application on hypercorn's Trio worker.

The database is opened first (migrations applied) and closed last. Beside the server run the
webhook tasks: the scans that find events (`proxy.api.webhook_scans`) and the deliveries
(`proxy.api.webhook_delivery`). SIGHUP is ignored (the role has nothing to reload yet); SIGTERM
or SIGINT stops taking connections and lets requests under way finish (hypercorn's graceful
timeout), and deliveries under way a short grace. A port that cannot be bound is `CannotStart`.
"""

from __future__ import annotations

import functools
import logging
import signal

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from proxy.api.app import create_app
from proxy.api.context import ApiContext
from proxy.api.housekeeping import run_housekeeping
from proxy.api.webhook_delivery import run_deliveries
from proxy.api.webhook_scans import run_scans
from proxy.runtime.config import ApiSettings, CannotStart, Config
from proxy.store.connection import Connection
from proxy.store.db import open_database

log = logging.getLogger("proxy.api")

__all__ = ["run_api_role", "serve_api"]

_GRACEFUL_SECONDS = 10.0


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
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `stop` is set; `task_status.started` gets the bound addresses."""
    app = create_app(database, settings, context)
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


async def run_api_role(config: Config) -> None:
    """Serve the partner API until SIGTERM/SIGINT."""
    stop = trio.Event()
    context = ApiContext.from_config(config)
    async with open_database(config.database) as db:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(
                    functools.partial(serve_api, context=context), db, config.api, stop
                )
                log.info("partner API listening", extra={"bind": binds})
                nursery.start_soon(
                    functools.partial(run_scans, interval=config.api.webhook_scan_interval),
                    db,
                    stop,
                )
                nursery.start_soon(run_deliveries, db, config.api, context.keys, stop)
                nursery.start_soon(run_housekeeping, db, config.api.idempotency_hours, stop)
                async for signum in signals:
                    if signum == signal.SIGHUP:  # `run` passes it to every role
                        log.info("SIGHUP: the partner API has nothing to reload")
                        continue
                    log.info("shutting down", extra={"signal": signal.Signals(signum).name})
                    stop.set()
                    break
    log.info("partner API stopped")
