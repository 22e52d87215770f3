"""What the partner API needs of the configuration besides the database, read once at start.

`ApiContext.from_config` gives the base URL chargers are given (`[registry] public_url`, see
`proxy.routing.registry.records.public_base_url`), the keys that seal upstream secrets, the
identities the configuration file routes itself, and the ERE factor table (`[ere]
factors_file`, loaded as the workers load it). `ApiContext.bare()` is a context without a
public URL, keys or file routes, with the shipped factor table. MID scans take their price per
kWh and MID meter list from `[api] scan_price_per_kwh` and `scan_mid_meters_file` (bare: the
defaults and the shipped list). Statements and payouts read the `[ere]` settings the workers
use (the provider named on fee invoices, the remittance text, the referral step; bare: the
defaults).

Errors: `CannotStart` for a malformed secret key or an unreadable factor table or MID list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from proxy.capture.evidence import EvidenceError, MidMeterList, load_mid_meters
from proxy.ere.core.factors import FactorTable, FactorTableError, load_factor_table
from proxy.routing.registry.errors import SecretKeyError
from proxy.routing.registry.records import public_base_url
from proxy.routing.registry.sealing import KeyRing
from proxy.runtime.config import ApiSettings, CannotStart, Config, EreSettings

__all__ = ["ApiContext"]


@dataclass(frozen=True)
class ApiContext:
    ocpp_base_url: str | None
    keys: KeyRing | None
    file_routes: frozenset[str]
    factors: FactorTable
    scan_price_per_kwh: Decimal = Decimal(ApiSettings().scan_price_per_kwh)
    mid_meters: MidMeterList = field(default_factory=load_mid_meters)
    ere: EreSettings = field(default_factory=EreSettings)

    @classmethod
    def from_config(cls, config: Config) -> ApiContext:
        try:
            keys = KeyRing.from_env(config.registry.secret_key_env)
            path = Path(config.ere.factors_file) if config.ere.factors_file else None
            factors = load_factor_table(path)
            mid_meters = load_mid_meters(config.api.scan_mid_meters_file or None)
        except (SecretKeyError, OSError, FactorTableError, EvidenceError) as exc:
            raise CannotStart(f"the partner API cannot start: {exc}") from None
        price = Decimal(config.api.scan_price_per_kwh)
        return cls(
            public_base_url(config),
            keys,
            frozenset(config.chargers),
            factors,
            price,
            mid_meters,
            ere=config.ere,
        )

    @classmethod
    def bare(cls) -> ApiContext:
        return cls(None, None, frozenset(), load_factor_table())
