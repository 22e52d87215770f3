"""`DatabaseRouter`: routes from the registry table, with the TOML routes as fallback.

It answers `lookup` from an in-memory snapshot (the accept path never waits for the database);
`run` loads it, then refreshes it every `refresh_interval` seconds (rows whose `updated_at`
moved, plus a cheap count to notice removals) and rereads everything every
`full_reload_interval`. Precedence of a lookup:

1. a row in the database: its route, or refused (404) when the row is disabled or its upstream
   secret cannot be opened (the problem is logged once, without the secret);
2. the TOML `[chargers."<identity>"]` table;
3. the TOML `[default_route]`;
4. refused (404).

A row a partner registered (`api_chargers`) gets `upstream_public_only`, unless `[api]
upstreams_allow_private`: the dialer then connects only to public addresses of its upstream.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import msgspec
import trio

from proxy.routing.registry.errors import RegistryError
from proxy.routing.registry.records import COLUMNS, Charger, charger_of
from proxy.routing.registry.sealing import KeyRing
from proxy.routing.router import StaticRouter
from proxy.runtime.config import Config, Route
from proxy.store.db import DATABASE_ERRORS, Database

log = logging.getLogger("proxy.registry")

# Rows changed this long before the last look are fetched again, for transactions that were
# still open (their updated_at lies before they became visible).
_OVERLAP = timedelta(seconds=30)
# The registry's columns, and whether a partner registered the charger (see the docstring).
_ROWS = (
    f"SELECT {COLUMNS}, EXISTS (SELECT 1 FROM api_chargers a WHERE a.identity = chargers.identity)"
    " AS partner FROM chargers"
)


class DatabaseRouter:
    """A `Router` over the registry table with the TOML routes as fallback (see the module docstring)."""

    def __init__(self, config: Config, keys: KeyRing | None) -> None:
        self._fallback = StaticRouter(config)
        self._settings = config.registry
        self._keys = keys
        self._partners_public_only = not config.api.upstreams_allow_private
        # identity -> route, or None for a row that refuses its charger
        self._routes: dict[str, Route | None] = {}
        self._problems: dict[str, str] = {}  # identity -> the problem last logged
        self._since: datetime | None = None  # database time of the last look
        self._wakeup = trio.Event()

    def lookup(self, identity: str) -> Route | None:
        try:
            return self._routes[identity]
        except KeyError:
            return self._fallback.lookup(identity)

    def replace(self, config: Config) -> None:
        """Take the TOML routes of a reloaded configuration; a change of `[api]
        upstreams_allow_private` makes the next refresh reread every row."""
        self._fallback.replace(config)
        public_only = not config.api.upstreams_allow_private
        if public_only != self._partners_public_only:
            self._partners_public_only, self._since = public_only, None

    def refresh_soon(self) -> None:
        """Make `run` look at the database now rather than at the next interval."""
        self._wakeup.set()

    def __len__(self) -> int:
        """How many chargers the database snapshot holds."""
        return len(self._routes)

    async def run(
        self, db: Database, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load the snapshot (errors propagate), report started, then keep it fresh until cancelled."""
        await self.reload(db)
        task_status.started()
        last_full = trio.current_time()
        while True:
            with trio.move_on_after(self._settings.refresh_interval):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            try:
                if trio.current_time() - last_full >= self._settings.full_reload_interval:
                    await self.reload(db)
                    last_full = trio.current_time()
                else:
                    await self.refresh(db)
            except DATABASE_ERRORS as exc:
                log.warning(
                    "charger registry refresh failed; keeping the last snapshot",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )

    async def reload(self, db: Database) -> None:
        """Replace the snapshot with every row of the table."""
        async with db.transaction(isolation="repeatable_read", readonly=True) as conn:
            now = await conn.fetchval("SELECT now()")
            rows = await conn.fetch(_ROWS)
        routes = {row["identity"]: self._entry(charger_of(row), row["partner"]) for row in rows}
        self._routes, self._since = routes, now
        for identity in set(self._problems) - set(routes):
            del self._problems[identity]

    async def refresh(self, db: Database) -> None:
        """Apply the rows changed since the last look, and drop rows that are gone."""
        if self._since is None:
            await self.reload(db)
            return
        async with db.transaction(isolation="repeatable_read", readonly=True) as conn:
            now = await conn.fetchval("SELECT now()")
            rows = await conn.fetch(f"{_ROWS} WHERE updated_at > $1", self._since - _OVERLAP)
            changed = {
                row["identity"]: self._entry(charger_of(row), row["partner"]) for row in rows
            }
            known = set(self._routes) | set(changed)
            gone: set[str] = set()
            if await conn.fetchval("SELECT count(*) FROM chargers") != len(known):
                present = {
                    row["identity"] for row in await conn.fetch("SELECT identity FROM chargers")
                }
                gone = known - present
        self._routes.update(changed)
        for identity in gone:
            self._routes.pop(identity, None)
            self._problems.pop(identity, None)
        self._since = now

    def _entry(self, charger: Charger, partner: bool) -> Route | None:
        if not charger.enabled:
            return None
        try:
            route = charger.route(self._keys)
        except (RegistryError, ValueError) as exc:
            problem = str(exc)
            if self._problems.get(charger.identity) != problem:
                log.error(
                    "charger refused: its registry row is unusable",
                    extra={"identity": charger.identity, "error": problem},
                )
                self._problems[charger.identity] = problem
            return None
        self._problems.pop(charger.identity, None)
        if partner and self._partners_public_only:
            return msgspec.structs.replace(route, upstream_public_only=True)
        return route
