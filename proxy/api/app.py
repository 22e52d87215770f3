"""The partner API application: routes, problem details, the body cap, OpenAPI.

`create_app(database, settings, context)` builds the FastAPI application over an open database
(see `proxy.store.db.open_database`) and what it needs of the configuration
(`proxy.api.context`; default `ApiContext.bare()`). OpenAPI 3.1 is served at `/v1/openapi.json`
and an interactive page at `/v1/docs`; every error is problem+json (`proxy.api.problems`) but
the OAuth2 token endpoint's own (`proxy.api.oauth`). Rate limits: `proxy.api.throttle`. HEAD
is answered as GET without the body (`proxy.api.methods`); a path with a trailing slash is a
404, never a redirect. Every answer and the throttle's refusals are counted in `metrics`
(`proxy.api.metrics`; default: a registry of the application's own), which the role serves on
its admin port. OCPI 2.2.1 is mounted at `/ocpi` (`proxy.api.ocpi`), the partner dashboard's
pages are under `/dashboard` (`proxy.api.dashboard`).
"""

from __future__ import annotations

from fastapi import FastAPI

from proxy.api import (
    chargers,
    current_key,
    customers,
    energy,
    oauth,
    payouts,
    scans,
    session_push,
    sessions,
    statements,
    webhooks,
)
from proxy.api.auth_cache import AuthCache
from proxy.api.body_limit import BodyLimit
from proxy.api.context import ApiContext
from proxy.api.dashboard.site import install_dashboard
from proxy.api.methods import HeadAsGet
from proxy.api.metrics import ApiMetrics
from proxy.api.ocpi.app import MOUNT as OCPI_MOUNT
from proxy.api.ocpi.app import create_ocpi_app
from proxy.api.problems import install_problem_handlers
from proxy.api.request_metrics import RequestMetrics, route_templates
from proxy.api.statement_documents import StatementPdfs
from proxy.api.throttle import RateLimitHeaders, Throttle
from proxy.runtime.config import ApiSettings
from proxy.store.connection import Connection

__all__ = ["OPENAPI_URL", "create_app"]

OPENAPI_URL = "/v1/openapi.json"

_DESCRIPTION = """\
Partners (CPOs, installers, energy suppliers) enrol their customers for ERE bookings.

Authenticate with `Authorization: Bearer <key>` (a key from your account manager; each key has
scopes), or with an access token from `POST /v1/oauth/token` (OAuth2 client credentials: the key
id and secret as client id and secret). Requests are rate limited per key (429 with
`Retry-After`). Every other POST needs an `Idempotency-Key` header: a repeat with the same body
gets the same answer, a different body under the same key is a 409. One object is answered
with its `ETag`: `If-None-Match` makes a read 304 while it is current, and a `PATCH` needs
`If-Match` (428 without, 412 when the object changed since), so no change is overwritten
unseen. Errors are RFC 9457 problem details (`application/problem+json`), but for the token
endpoint's own (RFC 6749 §5.2).
"""


def create_app(
    database: Connection,
    settings: ApiSettings,
    context: ApiContext | None = None,
    metrics: ApiMetrics | None = None,
) -> FastAPI:
    app = FastAPI(
        title="ERE partner API",
        version="1",
        description=_DESCRIPTION,
        openapi_url=OPENAPI_URL,
        docs_url="/v1/docs",
        redoc_url=None,
        # A path with a trailing slash is unknown (404), never redirected: the redirect would
        # be built from the request's Host header.
        redirect_slashes=False,
    )
    app.state.database = database
    app.state.context = context or ApiContext.bare()
    app.state.settings = settings
    app.state.throttle = Throttle(settings)
    app.state.auth_cache = AuthCache(settings.auth_cache_seconds)
    app.state.metrics = metrics = metrics or ApiMetrics()
    metrics.watch_throttle(app.state.throttle)
    app.state.access_token_seconds = settings.access_token_seconds
    app.state.statement_pdfs = StatementPdfs()
    install_problem_handlers(app)
    app.include_router(customers.router)
    app.include_router(energy.router)
    app.include_router(chargers.router)
    app.include_router(session_push.router)
    app.include_router(sessions.router)
    app.include_router(statements.router)
    app.include_router(payouts.router)
    app.include_router(scans.router)
    app.include_router(current_key.router)
    app.include_router(oauth.router)
    app.include_router(webhooks.router)
    # The partner dashboard's pages (`proxy.api.dashboard`): HTML, not in this OpenAPI.
    install_dashboard(app)
    # OCPI 2.2.1 for CPOs' platforms: its own answers and specification, not in this OpenAPI.
    app.mount(
        OCPI_MOUNT, create_ocpi_app(database, settings, app.state.context, app.state.throttle)
    )
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HeadAsGet)
    app.add_middleware(RequestMetrics, metrics=metrics, templates=route_templates(app))
    return app
