"""The dashboard added to the partner API's application: its routers, static files and state.

`install_dashboard(app)` includes every page router (none in the OpenAPI document) and the
static files, and keeps the log-in lockout by address (`address_lockout`) in the application's
state, one per process.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response

from proxy.api.dashboard import (
    customer_pages,
    earnings_pages,
    key_pages,
    login_pages,
    overview_pages,
    scan_pages,
    session_pages,
    statement_pages,
    webhook_pages,
)
from proxy.api.dashboard.address_lockout import AddressLockout
from proxy.api.dashboard.static_files import static_response

__all__ = ["install_dashboard"]

_static = APIRouter(include_in_schema=False)


@_static.get("/dashboard/static/{name}")
async def static_file(name: str) -> Response:
    return static_response(name)


def install_dashboard(app: FastAPI) -> None:
    app.state.dashboard_lockout = AddressLockout()
    for module in (
        login_pages,
        overview_pages,
        customer_pages,
        session_pages,
        earnings_pages,
        statement_pages,
        scan_pages,
        webhook_pages,
        key_pages,
    ):
        app.include_router(module.router)
    app.include_router(_static)
