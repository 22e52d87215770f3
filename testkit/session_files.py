"""Sessions as partners supply them, for the ingest tests: records, and CSV files as evcc and
a CPMS export them.

`external(...)` is a valid `ExternalSession` (fields replaceable); `evcc_export(rows, ...)` is
the bytes of an evcc session export of `rows` finished sessions spread over `loadpoints`, as
evcc writes it (UTF-8 with a byte order mark, its English, German or Dutch header, local times
without an offset, kWh with a decimal point, or a comma and `;` between cells as older German
exports did), each loadpoint's meter counting on from session to session, all ended before
`until`; local times the clocks passed twice are left out, so every row reads. `EVCC_HEADERS`
are the headers evcc writes, by language (from evcc's i18n files, sessions.csv).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from proxy.ingest.records import ExternalSession

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

EVCC_HEADERS = {
    "en": "Created,Finished,Charging point,Identifier,Vehicle,Mileage (km),Meter start (kWh),"
    "Meter stop (kWh),Energy (kWh),Duration,SoC start (%),SoC end (%),Added range (km),"
    "Solar (%),Cost,Price/kWh,CO₂/kWh",
    "de": "Startzeit;Endzeit;Ladepunkt;Kennung;Fahrzeug;Kilometerstand (km);"
    "Anfangszählerstand (kWh);Endzählerstand (kWh);Energie (kWh);Ladedauer;Ladestand Start (%);"
    "Ladestand Ende (%);Geladene Reichweite (km);Sonne (%);Kosten;Preis/kWh;CO₂/kWh",
    "nl": "Aangemaakt,Beëindigd,Oplaadpunt,Identificatie,Voertuig,Kilometerstand (km),"
    "Beginwaarde meter (kWh),Eindwaarde meter (kWh),Energie (kWh),Duur,SoC start (%),"
    "SoC eind (%),Zonne-energie (%),Prijs,Prijs/kWh,CO₂/kWh",
}


def external(**fields: Any) -> ExternalSession:
    """A valid session of charger CP-A supplied by P1 over the API: 7.5 kWh in two hours on 2
    March 2026, meter 1,000,000 → 1,007,500 Wh; `fields` replace any."""
    session = ExternalSession(
        source="api",
        source_ref="s-1",
        partner_id="P1",
        identity="CP-A",
        transaction_id=None,
        started_at=START,
        stopped_at=START + timedelta(hours=2),
        energy_wh=Decimal(7500),
        meter_start_wh=Decimal(1_000_000),
        meter_stop_wh=Decimal(1_007_500),
    )
    return replace(session, **fields)


def _ambiguous(moment: datetime) -> bool:
    naive = moment.astimezone(AMSTERDAM).replace(tzinfo=None)
    return (
        naive.replace(tzinfo=AMSTERDAM, fold=0).utcoffset()
        != naive.replace(tzinfo=AMSTERDAM, fold=1).utcoffset()
    )


def evcc_export(
    rows: int,
    *,
    loadpoints: Sequence[str] = ("Garage",),
    until: datetime = datetime(2026, 6, 1, tzinfo=UTC),
    every: timedelta = timedelta(hours=3),
    language: str = "en",
) -> bytes:
    """An evcc session export (see the module docstring): 7.5 kWh in 90 minutes a session."""
    german = language == "de"
    cell = ";" if german else ","
    lines = [EVCC_HEADERS[language]]
    per_loadpoint = -(-rows // len(loadpoints))
    made = 0
    for n, loadpoint in enumerate(loadpoints):
        meter = Decimal("1234.5") + n
        moment = until - every * (per_loadpoint + 50) + timedelta(minutes=7 * n)
        while made < rows and made < per_loadpoint * (n + 1):
            start, stop = moment, moment + timedelta(minutes=90)
            moment += every
            if _ambiguous(start) or _ambiguous(stop):
                continue
            energy = Decimal("7.5")
            values = [
                f"{start.astimezone(AMSTERDAM):%Y-%m-%d %H:%M:%S}",
                f"{stop.astimezone(AMSTERDAM):%Y-%m-%d %H:%M:%S}",
                loadpoint,
                "",
                "e-Golf",
                "",
                f"{meter}",
                f"{meter + energy}",
                f"{energy}",
                "1h30m0s",
                "",
                "",
                "",
                "42.5",
                "",
                "",
                "",
            ][: len(lines[0].split(cell))]
            if german:
                values = [
                    v.replace(".", ",") if v[:1].isdigit() and ":" not in v else v for v in values
                ]
            lines.append(cell.join(values))
            meter += energy
            made += 1
    return ("\ufeff" + "\n".join(lines) + "\n").encode()
