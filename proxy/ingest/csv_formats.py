"""The CSV layouts sessions are imported from, and how one row of each becomes a session.

Three layouts (`FORMATS`); a file's header names its columns, matched without regard to case,
spacing or accents' composition, in any order, other columns ignored:

- `evcc`: evcc's session export (Sessions → Download CSV), headers in the exporting user's
  language: English, German or Dutch, and the field names older versions wrote
  (`Created`/`Startzeit`/`Aangemaakt`, `Finished`/`Endzeit`/`Beëindigd`,
  `Charging point`/`Loadpoint`/`Ladepunkt`/`Oplaadpunt`, `Energy (kWh)`/`Charged Energy
  (kWh)`/`Energie (kWh)`, optional `Meter start (kWh)`/`Anfangszählerstand (kWh)`/`Beginwaarde
  meter (kWh)` and `Meter stop (kWh)`/`Endzählerstand (kWh)`/`Eindwaarde meter (kWh)`). Times are
  the evcc server's local time without an offset (`2025-03-30 01:45:00`); energy in kWh, with a
  decimal point or comma (older German exports: `;` between cells, `12,5`). A loadpoint is mapped
  to a charger identity by the import's options. The session's id is `evcc:<charger>:<start>`, so
  an export that grew since the last import adds only its new rows.
- `eflux`: a CPMS's CDR export (as E-Flux/Road and OCPI-based platforms export them): `CDR ID`
  (or `Id`), `Charge Point ID` (or `EVSE Controller`, `Charge Station`), `Start Date Time` (or
  `Start Time`), `End Date Time` (or `End Time`), `Total Energy (kWh)` (or `kWh`, `Energy
  (kWh)`), optional `Meter Start (kWh)`/`Meter Stop (kWh)` (or in Wh), `Transaction ID`,
  `Signed Data`. The id is the CDR id.
- `generic`: our own: `charger`, `started_at`, `stopped_at`, `energy_kwh` or `energy_wh`, and
  optional `id`, `transaction_id`, `meter_start_kwh`/`meter_stop_kwh` (or `_wh`) and
  `signed_data`. The id is `id`, or `<file name>:<line>` without that column.

Times with an offset (ISO 8601, `Z` too) are taken as given; without one they are local times of
the import's time zone. A local time the clocks skipped (spring forward) never happened and is
refused; one they passed twice (fall back) is refused too unless the import says which to take
(`fold`: `earlier`, the summer time one, or `later`). Numbers have a decimal point or a comma
and no thousands separators; a cell that is no number (`=1+2`) is refused and shown as data.

`Layout.read(cells, line)` turns one row into an `ExternalSession`, or raises `CellError` naming
the column as the file names it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from proxy.ingest.cells import shown
from proxy.ingest.records import ExternalSession

__all__ = [
    "FOLDS",
    "FORMATS",
    "CellError",
    "HeaderError",
    "ImportOptions",
    "Layout",
    "layout_for",
    "parse_charger_map",
    "parse_number",
    "parse_time",
]

FORMATS = ("evcc", "eflux", "generic")
FOLDS = ("refuse", "earlier", "later")
_MAX_NUMBER_CHARS = 40
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)")
_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)\s*(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)
_KWH, _WH = Decimal(1000), Decimal(1)


class CellError(ValueError):
    """A cell that cannot be read: `column` as the file's header names it, `detail` why."""

    def __init__(self, column: str, detail: str) -> None:
        super().__init__(f"{column}: {detail}")
        self.column, self.detail = column, detail


class HeaderError(ValueError):
    """A header that is not of the layout: what is missing or doubled."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What an import knows beside its file: whose sessions, where their local times are, which
    charger a loadpoint or charger name of the file is (`chargers`; `charger`: every row's)."""

    partner_id: str
    file_name: str
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Amsterdam"))
    chargers: Mapping[str, str] = field(default_factory=dict)
    charger: str | None = None
    fold: str = "refuse"


def _key(name: str) -> str:
    """A header cell as compared: NFC, case-folded, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


# Per layout: field → (the header names it goes by, required, unit factor to Wh or None).
_Fields = dict[str, tuple[tuple[str, ...], bool, Decimal | None]]
_EVCC: _Fields = {
    "started_at": (("created", "startzeit", "aangemaakt", "gestart"), True, None),
    "stopped_at": (("finished", "endzeit", "beëindigd"), True, None),
    "charger": (("charging point", "loadpoint", "ladepunkt", "oplaadpunt"), True, None),
    "energy": (("energy (kwh)", "charged energy (kwh)", "energie (kwh)"), True, _KWH),
    "meter_start": (
        ("meter start (kwh)", "anfangszählerstand (kwh)", "beginwaarde meter (kwh)"),
        False,
        _KWH,
    ),
    "meter_stop": (
        ("meter stop (kwh)", "endzählerstand (kwh)", "eindwaarde meter (kwh)"),
        False,
        _KWH,
    ),
}
_EFLUX: _Fields = {
    "id": (("cdr id", "id"), True, None),
    "charger": (("charge point id", "evse controller", "charge station"), True, None),
    "started_at": (("start date time", "start time"), True, None),
    "stopped_at": (("end date time", "end time"), True, None),
    "energy": (("total energy (kwh)", "kwh", "energy (kwh)"), True, _KWH),
    "meter_start": (("meter start (kwh)", "meter start (wh)"), False, None),
    "meter_stop": (("meter stop (kwh)", "meter stop (wh)"), False, None),
    "transaction_id": (("transaction id",), False, None),
    "signed_data": (("signed data",), False, None),
}
_GENERIC: _Fields = {
    "id": (("id",), False, None),
    "charger": (("charger",), True, None),
    "started_at": (("started_at",), True, None),
    "stopped_at": (("stopped_at",), True, None),
    "energy": (("energy_kwh", "energy_wh"), True, None),
    "meter_start": (("meter_start_kwh", "meter_start_wh"), False, None),
    "meter_stop": (("meter_stop_kwh", "meter_stop_wh"), False, None),
    "transaction_id": (("transaction_id",), False, None),
    "signed_data": (("signed_data",), False, None),
}
_LAYOUTS: dict[str, _Fields] = {"evcc": _EVCC, "eflux": _EFLUX, "generic": _GENERIC}


def _unit_of(header: str, fixed: Decimal | None) -> Decimal:
    if fixed is not None:
        return fixed
    return _KWH if "kwh" in _key(header) else _WH


@dataclass(frozen=True, slots=True)
class Layout:
    """A layout matched to one file's header: which cell holds which field."""

    format: str
    options: ImportOptions
    columns: Mapping[str, tuple[int, str, Decimal]]  # field → (index, header as written, unit)

    def read(self, cells: Sequence[str], line: int) -> ExternalSession:
        """The session of one row (`line`: its line in the file); `CellError` for a bad cell."""
        # In UTC: times of one zone compare by their wall clock, the repeated hour's included.
        started = self._time(cells, "started_at").astimezone(UTC)
        stopped = self._time(cells, "stopped_at").astimezone(UTC)
        energy = self._number(cells, "energy")
        if energy is None:
            raise CellError(self.columns["energy"][1], "is empty")
        identity = self._charger(cells)
        ref = self._text(cells, "id")
        if self.format == "evcc":
            ref = f"evcc:{identity}:{started.astimezone(UTC).isoformat()}"
        elif ref is None:
            ref = f"{self.options.file_name}:{line}"
        return ExternalSession(
            source="csv",
            source_ref=ref,
            partner_id=self.options.partner_id,
            identity=identity,
            transaction_id=self._text(cells, "transaction_id"),
            started_at=started,
            stopped_at=stopped,
            energy_wh=energy,
            meter_start_wh=self._number(cells, "meter_start"),
            meter_stop_wh=self._number(cells, "meter_stop"),
            signed_data=self._text(cells, "signed_data"),
        )

    def _cell(self, cells: Sequence[str], name: str) -> tuple[str, str] | None:
        """(the cell's text stripped, its column's header), or None: no such column or cell."""
        if name not in self.columns:
            return None
        index, header, _ = self.columns[name]
        return ((cells[index] if index < len(cells) else "").strip(), header)

    def _text(self, cells: Sequence[str], name: str) -> str | None:
        found = self._cell(cells, name)
        return found[0] or None if found else None

    def _time(self, cells: Sequence[str], name: str) -> datetime:
        found = self._cell(cells, name)
        assert found is not None  # a required column
        text, header = found
        if not text:
            detail = (
                "is empty: the session has not finished" if name == "stopped_at" else "is empty"
            )
            raise CellError(header, detail)
        try:
            return parse_time(text, self.options.timezone, self.options.fold)
        except ValueError as error:
            raise CellError(header, str(error)) from None

    def _number(self, cells: Sequence[str], name: str) -> Decimal | None:
        found = self._cell(cells, name)
        if found is None or not found[0]:
            return None
        text, header = found
        try:
            return parse_number(text) * self.columns[name][2]
        except ValueError as error:
            raise CellError(header, str(error)) from None

    def _charger(self, cells: Sequence[str]) -> str:
        if self.options.charger is not None:
            return self.options.charger
        found = self._cell(cells, "charger")
        assert found is not None
        name, header = found
        if not name:
            raise CellError(header, "is empty")
        mapped = self.options.chargers.get(name)
        if mapped is not None:
            return mapped
        if self.format == "evcc":
            raise CellError(
                header,
                f"no charger for the loadpoint {shown(name)}: map it (e.g. {shown(name)}=CP-1)",
            )
        return name


def layout_for(format: str, header: Sequence[str], options: ImportOptions) -> Layout:
    """The layout `format` matched to `header`; `HeaderError` saying what does not fit."""
    if format not in _LAYOUTS:
        raise HeaderError(f"unknown format {shown(format)}; one of {', '.join(FORMATS)}")
    if options.fold not in FOLDS:
        raise HeaderError(f"fold must be one of {', '.join(FOLDS)}")
    keys = [_key(cell.lstrip("\ufeff")) for cell in header]
    columns = {}
    for name, (aliases, required, unit) in _LAYOUTS[format].items():
        found = [i for i, key in enumerate(keys) if key in aliases]
        if len(found) > 1:
            named = ", ".join(shown(header[i]) for i in found)
            raise HeaderError(f"the header names {name.replace('_', ' ')} more than once ({named})")
        if not found:
            if required and not (name == "charger" and options.charger is not None):
                raise HeaderError(
                    f"no column for {name.replace('_', ' ')}: a {format} file names it"
                    f" {' or '.join(repr(a) for a in aliases)}"
                )
            continue
        written = header[found[0]].lstrip("\ufeff").strip()
        columns[name] = (found[0], written, _unit_of(written, unit))
    return Layout(format, options, columns)


def parse_number(text: str) -> Decimal:
    """A decimal number with a point or a comma; ValueError saying why not."""
    if len(text) > _MAX_NUMBER_CHARS or not _NUMBER.fullmatch(text):
        raise ValueError(f"{shown(text)} is not a number (digits, one decimal point or comma)")
    try:
        return Decimal(text.replace(",", "."))
    except InvalidOperation:
        raise ValueError(f"{shown(text)} is not a number") from None


def parse_time(text: str, zone: ZoneInfo, fold: str = "refuse") -> datetime:
    """An aware time: as given with an offset, else local in `zone` (module docstring)."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{shown(text)} is not a time (2025-03-30 14:05:00, or with an offset: +01:00, Z)"
        )
    day, clock, offset = match.groups()
    iso = f"{day}T{clock.replace(',', '.')}"
    if offset:
        iso += "+00:00" if offset.upper() == "Z" else offset
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"{shown(text)} is not a valid date and time") from None
    if moment.tzinfo is not None:
        return moment
    return _local(moment, zone, fold, text)


def _local(naive: datetime, zone: ZoneInfo, fold: str, text: str) -> datetime:
    earlier, later = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if earlier.utcoffset() == later.utcoffset():
        return earlier
    exists = earlier.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive
    if not exists:
        raise ValueError(
            f"{shown(text)} never happened in {zone.key}: the clocks skipped that hour"
            " (give the time with an offset)"
        )
    if fold == "earlier":
        return earlier
    if fold == "later":
        return later
    raise ValueError(
        f"{shown(text)} happened twice in {zone.key}: the clocks went back (give the time with"
        " an offset, or choose the earlier or later one)"
    )


def parse_charger_map(entries: Sequence[str]) -> dict[str, str]:
    """`NAME=IDENTITY` entries (a loadpoint or charger name of the file, the identity it is) as a
    mapping; ValueError naming a malformed entry or a name given twice."""
    mapping: dict[str, str] = {}
    for entry in entries:
        name, equals, identity = entry.rpartition("=")
        name, identity = name.strip(), identity.strip()
        if not equals or not name or not identity:
            raise ValueError(f"{shown(entry)} is not NAME=IDENTITY")
        if name in mapping:
            raise ValueError(f"{shown(name)} is mapped twice")
        mapping[name] = identity
    return mapping
