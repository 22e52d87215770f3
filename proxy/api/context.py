"""What the partner API needs of the configuration besides the database, read once at start.

`ApiContext.from_config` gives the base URL chargers are given (`[registry] public_url`, see
`proxy.routing.registry.records.public_base_url`), the keys that seal upstream secrets, the
identities the configuration file routes itself, and the ERE factor table (`[ere]
factors_file`, loaded as the workers load it). `ApiContext.bare()` is a context without a
public URL, keys or file routes, with the shipped factor table.

Errors: `CannotStart` for a malformed secret key or an unreadable factor table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.ere.core.factors import FactorTable, FactorTableError, load_factor_table
from proxy.routing.registry.errors import SecretKeyError
from proxy.routing.registry.records import public_base_url
from proxy.routing.registry.sealing import KeyRing
from proxy.runtime.config import CannotStart, Config

__all__ = ["ApiContext"]


@dataclass(frozen=True)
class ApiContext:
    ocpp_base_url: str | None
    keys: KeyRing | None
    file_routes: frozenset[str]
    factors: FactorTable

    @classmethod
    def from_config(cls, config: Config) -> ApiContext:
        try:
            keys = KeyRing.from_env(config.registry.secret_key_env)
            path = Path(config.ere.factors_file) if config.ere.factors_file else None
            factors = load_factor_table(path)
        except (SecretKeyError, OSError, FactorTableError) as exc:
            raise CannotStart(f"the partner API cannot start: {exc}") from None
        return cls(public_base_url(config), keys, frozenset(config.chargers), factors)

    @classmethod
    def bare(cls) -> ApiContext:
        return cls(None, None, frozenset(), load_factor_table())
