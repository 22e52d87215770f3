"""The dashboard's forms read into the partner API's request models, so both take one path.

`enrolment_body` reads the enrolment form into a `CustomerIn` (the admin records the consent the
customer gave: its text version, the partner's reference and when it was given, as Dutch local
time; now when left empty); `scan_body` reads the MID scan form into a `ScanIn`, one charger per
line (`identity, meter type, meter serial, kWh a year`, every part but the first optional; a
line starting with a comma names no identity). `form_key` is the form's idempotency key: a form
carries a fresh one from the page that showed it, so a second submit of the same form replays
the first answer instead of enrolling or scanning twice. Domain rules (EAN check digit, IBAN,
identities...) are applied afterwards by the data classes, as for the API.

Errors: `FormErrors` whose `errors` maps a form field to what is wrong with it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from proxy.api.models import CustomerIn
from proxy.api.scan_models import MAX_CHARGERS, ScanIn
from proxy.ere.core.quarters import DUTCH_TIME

__all__ = [
    "ENROLMENT_FIELDS",
    "FormErrors",
    "enrolment_body",
    "form_key",
    "new_form_key",
    "scan_body",
]

# The enrolment form's fields: (name, label, required, autocomplete)
ENROLMENT_FIELDS = (
    ("name", "Name", True, "name"),
    ("email", "E-mail address", True, "email"),
    ("address", "Street and number", True, "street-address"),
    ("postcode", "Postcode", True, "postal-code"),
    ("city", "City", True, "address-level2"),
    ("ean", "EAN of the connection (18 digits)", True, "off"),
    ("grid_operator", "Grid operator", True, "off"),
    ("iban", "IBAN (when you pay customers directly)", False, "off"),
    ("referral_code", "Referral code", False, "off"),
)
_FORM_KEY = re.compile(r"dash-[0-9a-f]{32}")
_MAX_LINE = 1000


class FormErrors(Exception):
    """A form that cannot be read: `errors` maps each bad field to what is wrong."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def new_form_key() -> str:
    return f"dash-{secrets.token_hex(16)}"


def form_key(form: Mapping[str, Any]) -> str:
    """The form's idempotency key (FormErrors when it is missing or not one of ours)."""
    key = form.get("idem")
    if not isinstance(key, str) or not _FORM_KEY.fullmatch(key):
        raise FormErrors({"form": "this form is not one the dashboard showed; reload it"})
    return key


def _text(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def _pydantic_errors(error: ValidationError, prefix: str = "") -> dict[str, str]:
    found = {}
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "form"
        found[prefix + field] = item["msg"]
    return found


def _consent_time(text: str | None, now: datetime) -> str:
    if text is None:
        return now.astimezone(DUTCH_TIME).isoformat(timespec="seconds")
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        raise FormErrors({"consent.accepted_at": "a date and time"}) from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=DUTCH_TIME)
    return local.isoformat(timespec="seconds")


def enrolment_body(form: Mapping[str, Any], now: datetime) -> CustomerIn:
    """The enrolment the form asks for (see the module docstring)."""
    if form.get("consent_given") != "yes":
        raise FormErrors({"consent_given": "confirm that the customer gave their consent"})
    values: dict[str, Any] = {
        name: _text(form, name) for name, _, required, _ in ENROLMENT_FIELDS if required
    }
    for name, _, required, _ in ENROLMENT_FIELDS:
        if not required and _text(form, name) is not None:
            values[name] = _text(form, name)
    missing = {name: "is required" for name, value in values.items() if value is None}
    language = _text(form, "language")
    if language is not None:
        values["language"] = language
    consent = {
        "text_version": _text(form, "consent_text_version"),
        "accepted_at": _consent_time(_text(form, "consent_at"), now),
        "user_reference": _text(form, "consent_reference"),
    }
    missing |= {f"consent.{k}": "is required" for k, v in consent.items() if v is None}
    if missing:
        raise FormErrors(missing)
    try:
        return CustomerIn.model_validate(values | {"consent": consent})
    except ValidationError as error:
        raise FormErrors(_pydantic_errors(error)) from None


def scan_body(text: str, identities: list[str]) -> ScanIn:
    """The scan of the form's lines and of `identities` (the partner's chargers, when the
    form asks for all of them); a charger named in both is scanned once, as the line says."""
    chargers: list[dict[str, Any]] = []
    named: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > _MAX_LINE:
            raise FormErrors({"portfolio": f"line {number} is longer than {_MAX_LINE} characters"})
        parts = [part.strip() for part in line.split(",")]
        if len(parts) > 4:
            raise FormErrors({"portfolio": f"line {number} has more than four parts"})
        parts += [""] * (4 - len(parts))
        identity, meter_type, meter_serial, kwh = parts
        charger: dict[str, Any] = {}
        for name, value in (
            ("identity", identity),
            ("meter_type", meter_type),
            ("meter_serial", meter_serial),
        ):
            if value:
                charger[name] = value
        if kwh:
            if not kwh.isascii() or not kwh.isdigit():
                raise FormErrors({"portfolio": f"line {number}: kWh a year is a whole number"})
            charger["declared_kwh_per_year"] = int(kwh)
        if not charger:
            continue
        if identity:
            named.add(identity)
        chargers.append(charger)
    chargers += [{"identity": identity} for identity in identities if identity not in named]
    if not chargers:
        raise FormErrors({"portfolio": "name at least one charger, or scan all your chargers"})
    if len(chargers) > MAX_CHARGERS:
        raise FormErrors({"portfolio": f"at most {MAX_CHARGERS} chargers a scan"})
    try:
        return ScanIn.model_validate({"chargers": chargers})
    except ValidationError as error:
        raise FormErrors(_pydantic_errors(error)) from None
