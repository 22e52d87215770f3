"""Which upstream a charger identity goes to: a small interface and the TOML-backed registry.

The server only calls `Router.lookup`; a registry kept elsewhere (e.g. a database) implements the
same method. Reloading swaps the whole table at once, so a lookup never sees half a reload and
links already running keep the route they started with.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote, urlsplit

from proxy.runtime.config import Config, Route


class Router(Protocol):
    def lookup(self, identity: str) -> Route | None:
        """The route for `identity`, or None when it is not served (the server answers 404)."""
        ...


class StaticRouter:
    """Routes from the `[chargers]` and `[default_route]` tables of the configuration."""

    def __init__(self, config: Config) -> None:
        self._chargers = dict(config.chargers)
        self._default = config.default_route

    def lookup(self, identity: str) -> Route | None:
        return self._chargers.get(identity, self._default)

    def replace(self, config: Config) -> None:
        """Take the routes of a freshly loaded configuration."""
        self._chargers, self._default = dict(config.chargers), config.default_route


def upstream_url(route: Route, identity: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, target path) of the charger's URL at the upstream.

    The identity is appended to the route's base URL, percent-encoded as OCPP-J requires.
    """
    parts = urlsplit(route.upstream)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    base = parts.path.rstrip("/")
    target = f"{base}/{quote(identity, safe='')}"
    if parts.query:
        target += f"?{parts.query}"
    return parts.scheme, parts.hostname or "", port, target
