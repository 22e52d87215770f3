"""The OCPI application, mounted at `/ocpi` in the partner API's (`proxy.api.app`).

An application of its own, so that every answer, its errors included, is in OCPI's response
format (`proxy.api.ocpi.responses`) rather than problem details, and so that OCPI stays out of
the partner API's OpenAPI document (OCPI has its own specification). It shares the partner
API's database, settings, registry keys (which seal the platforms' tokens B) and rate limits;
the partner API's middleware (body cap, metrics) runs before it. Our URLs are built on `[api]
public_url` (`base_url`).
"""

from __future__ import annotations

from fastapi import FastAPI

from proxy.api.context import ApiContext
from proxy.api.ocpi import cdr_routes, credential_routes, session_routes, version_routes
from proxy.api.ocpi.credentials import Identity
from proxy.api.ocpi.responses import RequestIds, install_handlers
from proxy.api.throttle import Throttle
from proxy.runtime.config import ApiSettings
from proxy.store.connection import Connection

__all__ = ["MOUNT", "base_url", "create_ocpi_app"]

MOUNT = "/ocpi"


def base_url(settings: ApiSettings) -> str:
    """Where platforms reach the API: `[api] public_url`, else http://host:port."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def create_ocpi_app(
    database: Connection, settings: ApiSettings, context: ApiContext, throttle: Throttle
) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    app.state.database = database
    app.state.settings = settings
    app.state.keys = context.keys
    app.state.throttle = throttle
    ocpi = settings.ocpi
    app.state.identity = Identity(
        base_url(settings), ocpi.role, ocpi.country_code, ocpi.party_id, ocpi.business_name
    )
    install_handlers(app)
    app.include_router(version_routes.router)
    app.include_router(credential_routes.router)
    app.include_router(cdr_routes.router)
    app.include_router(session_routes.router)
    app.add_middleware(RequestIds)
    return app
