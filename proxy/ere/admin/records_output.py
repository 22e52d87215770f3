"""How `ere-proxy partners|customers|mandates|links|referrals` print records.

`Output` prints a table or fields for people, or JSON with `--json` (dates as ISO 8601, whole
decimals as integers). Tables and fields print stored control characters as `?` and line breaks
as `\\n`, whoever wrote them, so a record can never drive the terminal. The row builders here say
which columns a mandate (with its evidence and revocation) and a link period show.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

__all__ = ["LINK_HEADER", "MANDATE_HEADER", "Output", "link_row", "mandate_row"]

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "-"
    return _UNPRINTABLE.sub("?", str(value).replace("\n", "\\n"))


class Output:
    """Where an action prints: a table or fields for people, or JSON with `--json`."""

    def __init__(self, stdout: TextIO, as_json: bool) -> None:
        self.stdout, self.as_json = stdout, as_json

    def line(self, text: str) -> None:
        print(text, file=self.stdout)

    def json_or(self, value: Any, human: Callable[[], None]) -> None:
        if self.as_json:
            self.line(json.dumps(_json_value(value), indent=2, ensure_ascii=False))
        else:
            human()

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [list(header), *([_cell(value) for value in row] for row in rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for row in cells:
            self.line("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    def fields(self, record: dict[str, Any], indent: str = "") -> None:
        width = max((len(key) for key in record), default=0) + 1
        for key, value in record.items():
            if isinstance(value, dict):
                self.line(f"{indent}{key}:")
                self.fields(value, indent + "  ")
            else:
                self.line(f"{indent}{key + ':':<{width}} {_cell(value)}")


LINK_HEADER = (
    "IDENTITY",
    "CUSTOMER",
    "EAN",
    "MAX W",
    "VALID FROM",
    "VALID UNTIL",
    "RECORDED BY",
    "ENDED BY",
    "END REASON",
    "METER CLASS",
    "METER TYPE",
    "METER SERIAL",
    "LAST BOOT",
)


def link_row(link: dict[str, Any]) -> list[Any]:
    boot = link["last_boot"]
    meter = (
        ["never booted", "-", "-", "-"]
        if boot is None
        else [link["meter_class"], boot["meter_type"], boot["meter_serial"], boot["booted_at"]]
    )
    return [
        link["identity"],
        link["customer_id"],
        link["ean"],
        link["max_power_w"],
        link["valid_from"],
        link["valid_until"] or "open",
        link["recorded_by"],
        link["ended_by"],
        link["end_reason"],
        *meter,
    ]


MANDATE_HEADER = (
    "EAN",
    "YEAR",
    "CUSTOMER",
    "PARTNER",
    "ISSUED",
    "VALID FROM",
    "VALID UNTIL",
    "CONSENT",
    "TEXT",
    "DOCUMENT",
    "RECORDED",
    "BACKDATED",
    "REVOKED",
)


def mandate_row(mandate: dict[str, Any]) -> list[Any]:
    consent = mandate["consent"]
    recorded = f"{mandate['channel']} by {mandate['actor']} at {_cell(mandate['recorded_at'])}"
    revoked = mandate["revocation"]
    return [
        mandate["ean"],
        mandate["year"],
        mandate["customer_id"],
        mandate["partner_id"],
        mandate["issued_on"],
        mandate["valid_from"],
        mandate["valid_until"],
        f"{consent.get('method')} by {consent.get('by')} at {consent.get('at')}",
        mandate["consent_text_version"],
        (mandate["document_sha256"] or "")[:12],
        recorded,
        mandate["backdated"],
        None
        if revoked is None
        else f"covers up to {mandate['revoked_effective']} ({revoked.get('reason')})",
    ]
