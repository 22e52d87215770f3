"""ERE conversion factors per delivery year and market prices per quarter, kept as data.

1 ERE is 1 kg CO2 avoided. For electricity delivered to vehicles:

    ERE = kWh × renewable_share(year) × co2_g_per_mj × mj_per_kwh / 1000

The factors live in `proxy/ere/core/data/factors.toml` (one `[[year]]` per delivery year, one
`[[price]]` per quarter), never inline, so a new year is a data change. Numbers are read as
exact decimals. `ere()` applies the rounding rule of `proxy.ere.core.rounding`: the exact
product is rounded once to 0.01 ERE, half up (42.37 kWh in 2026 gives 14.09624478, so 14.10
ERE).

Errors: a malformed table raises `FactorTableError` naming the file and the entry; asking for a
year or quarter the table does not have raises `MissingFactorError`. There is no default: a
missing factor must stop a close, never be guessed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from proxy.ere.core.quarters import Quarter, QuarterFormatError
from proxy.ere.core.rounding import exact, require_decimal, to_ere

__all__ = [
    "FactorTable",
    "FactorTableError",
    "MissingFactorError",
    "QuarterPrice",
    "YearFactors",
    "ere",
    "load_factor_table",
    "parse_factor_table",
]

_DATA_FILE = Path(__file__).with_name("data") / "factors.toml"
_YEAR_KEYS = {"year", "renewable_share", "co2_g_per_mj", "mj_per_kwh", "placeholder", "source"}
_PRICE_KEYS = {"quarter", "eur_per_ere", "placeholder", "source"}


class FactorTableError(ValueError):
    """A factor table that cannot be used as written; the message names the entry."""


class MissingFactorError(LookupError):
    """The table has no factors for a delivery year, or no price for a quarter."""


@dataclass(frozen=True, slots=True)
class YearFactors:
    """The conversion factors of one delivery year (FactorTableError if out of range)."""

    year: int
    renewable_share: Decimal
    co2_g_per_mj: Decimal
    mj_per_kwh: Decimal
    placeholder: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        try:
            share = require_decimal(self.renewable_share, "renewable_share")
            grams = require_decimal(self.co2_g_per_mj, "co2_g_per_mj")
            megajoules = require_decimal(self.mj_per_kwh, "mj_per_kwh")
        except (TypeError, ValueError) as error:
            raise FactorTableError(f"year {self.year}: {error}") from None
        if not 0 < share <= 1:
            raise FactorTableError(
                f"year {self.year}: renewable_share must be in (0, 1], got {share}"
            )
        if grams <= 0 or megajoules <= 0:
            raise FactorTableError(
                f"year {self.year}: co2_g_per_mj and mj_per_kwh must be positive"
            )

    @property
    def ere_per_kwh(self) -> Decimal:
        """ERE earned by one kWh in this year, exact (0.332694 for 2026)."""
        context = exact()
        product = context.multiply(
            context.multiply(self.renewable_share, self.co2_g_per_mj), self.mj_per_kwh
        )
        return context.divide(product, Decimal(1000))


@dataclass(frozen=True, slots=True)
class QuarterPrice:
    """What one ERE delivered in `quarter` pays the owner before our fee, in euros."""

    quarter: Quarter
    eur_per_ere: Decimal
    placeholder: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        try:
            price = require_decimal(self.eur_per_ere, "eur_per_ere")
        except (TypeError, ValueError) as error:
            raise FactorTableError(f"price of {self.quarter}: {error}") from None
        if price < 0:
            raise FactorTableError(f"price of {self.quarter} must not be negative, got {price}")


@dataclass(frozen=True, slots=True)
class FactorTable:
    """Factors per delivery year and prices per quarter; each year and quarter at most once."""

    years: tuple[YearFactors, ...]
    prices: tuple[QuarterPrice, ...]

    def __post_init__(self) -> None:
        _reject_duplicates([entry.year for entry in self.years], "year")
        _reject_duplicates([entry.quarter for entry in self.prices], "price for quarter")

    def for_year(self, year: int) -> YearFactors:
        """The factors of a delivery year; MissingFactorError if the table lacks it."""
        for entry in self.years:
            if entry.year == year:
                return entry
        known = ", ".join(str(entry.year) for entry in self.years) or "none"
        raise MissingFactorError(f"no ERE factors for delivery year {year} (the table has {known})")

    def price_for(self, quarter: Quarter) -> QuarterPrice:
        """The market price of a quarter; MissingFactorError if the table lacks it."""
        for entry in self.prices:
            if entry.quarter == quarter:
                return entry
        known = ", ".join(str(entry.quarter) for entry in self.prices) or "none"
        raise MissingFactorError(f"no market price for {quarter} (the table has {known})")


def ere(kwh: Decimal, year_factors: YearFactors) -> Decimal:
    """ERE for `kwh` delivered in the factors' year, rounded once to 0.01 ERE, half up.

    Negative kWh (a correction, or energy fed back) give the exact negative of the positive
    amount. TypeError if kwh is not a Decimal.
    """
    energy = require_decimal(kwh, "kwh")
    return to_ere(exact().multiply(energy, year_factors.ere_per_kwh))


def load_factor_table(path: str | Path | None = None) -> FactorTable:
    """Read a factor table file; the shipped `data/factors.toml` when no path is given.

    OSError if the file cannot be read; FactorTableError if its content is not a valid table.
    """
    source = Path(path) if path is not None else _DATA_FILE
    return parse_factor_table(source.read_text(encoding="utf-8"), origin=str(source))


def parse_factor_table(text: str, origin: str = "factor table") -> FactorTable:
    """Build a FactorTable from TOML text; FactorTableError names `origin` and the entry."""
    try:
        document = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as error:
        raise FactorTableError(f"{origin}: not valid TOML: {error}") from None
    unknown = set(document) - {"year", "price"}
    if unknown:
        raise FactorTableError(
            f"{origin}: unknown sections {sorted(unknown)}; expected [[year]] and [[price]]"
        )
    try:
        years = tuple(_year_entry(entry) for entry in _entries(document, "year"))
        prices = tuple(_price_entry(entry) for entry in _entries(document, "price"))
        return FactorTable(years, prices)
    except FactorTableError as error:
        raise FactorTableError(f"{origin}: {error}") from None


def _entries(document: Mapping[str, Any], section: str) -> Iterable[Mapping[str, Any]]:
    entries = document.get(section, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise FactorTableError(f"[[{section}]] must be an array of tables")
    return entries


def _year_entry(entry: Mapping[str, Any]) -> YearFactors:
    year = entry.get("year")
    if not isinstance(year, int) or isinstance(year, bool):
        raise FactorTableError(f"a [[year]] entry needs an integer year, got {year!r}")
    where = f"year {year}"
    _check_keys(entry, _YEAR_KEYS, where)
    return YearFactors(
        year=year,
        renewable_share=_number(entry, "renewable_share", where),
        co2_g_per_mj=_number(entry, "co2_g_per_mj", where),
        mj_per_kwh=_number(entry, "mj_per_kwh", where),
        placeholder=_flag(entry, where),
        source=str(entry.get("source", "")),
    )


def _price_entry(entry: Mapping[str, Any]) -> QuarterPrice:
    raw = entry.get("quarter")
    if not isinstance(raw, str):
        raise FactorTableError(f'a [[price]] entry needs a quarter like "2026Q3", got {raw!r}')
    try:
        quarter = Quarter.parse(raw)
    except QuarterFormatError as error:
        raise FactorTableError(f"[[price]]: {error}") from None
    where = f"price of {quarter}"
    _check_keys(entry, _PRICE_KEYS, where)
    return QuarterPrice(
        quarter=quarter,
        eur_per_ere=_number(entry, "eur_per_ere", where),
        placeholder=_flag(entry, where),
        source=str(entry.get("source", "")),
    )


def _check_keys(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise FactorTableError(f"{where}: unknown keys {sorted(unknown)}")


def _number(entry: Mapping[str, Any], key: str, where: str) -> Decimal:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise FactorTableError(f"{where}: {key} must be a number, got {value!r}")
    return Decimal(value)


def _flag(entry: Mapping[str, Any], where: str) -> bool:
    value = entry.get("placeholder", False)
    if not isinstance(value, bool):
        raise FactorTableError(f"{where}: placeholder must be true or false, got {value!r}")
    return value


def _reject_duplicates(keys: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise FactorTableError(f"{what} {key} appears twice")
        seen.add(key)
