"""OCPI's basic types (types.asciidoc) as msgspec constraints, and decoding an object with them.

`CiString(n)`: printable ASCII, at most n characters, compared case-insensitively. `String(n)`:
printable UTF-8 (no control characters), at most n. `DateTime`: RFC 3339, UTC; a time without
a zone is UTC (`as_utc`). `number`: a JSON number, kept exact as `Decimal`. `Url`: a string of
at most 255 characters. Fields OCPI does not define are ignored (a newer minor version may
add some), never stored apart from the object as received.

`decode(body, type_)` reads a request body: JSON that does not parse is `OcpiError` HTTP 400
(the transport layer's), an object that breaks its type is status 2001 naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, TypeVar

import msgspec

from proxy.api.ocpi.envelope import OcpiError, Status

__all__ = [
    "Blob5000",
    "CiString32",
    "CiString36",
    "CiString39",
    "CiString48",
    "CountryCode",
    "DateTime",
    "Id36",
    "Id39",
    "PartyId",
    "String3",
    "String10",
    "String11",
    "String20",
    "String45",
    "String100",
    "String255",
    "String512",
    "Url",
    "as_utc",
    "check_number",
    "decode",
]

T = TypeVar("T")

# `\Z`, not `$`: `$` would let a trailing line break through.
_PRINTABLE_ASCII = r"\A[\x20-\x7e]*\Z"
_PRINTABLE = r"\A[^\x00-\x1f\x7f]*\Z"


def _ci(length: int, least: int = 0) -> msgspec.Meta:
    return msgspec.Meta(min_length=least, max_length=length, pattern=_PRINTABLE_ASCII)


def _text(length: int) -> msgspec.Meta:
    return msgspec.Meta(max_length=length, pattern=_PRINTABLE)


# CiString(n); an `Id` is one that must not be empty either.
CiString32 = Annotated[str, _ci(32)]
CiString36 = Annotated[str, _ci(36)]
CiString39 = Annotated[str, _ci(39)]
CiString48 = Annotated[str, _ci(48)]
Id36 = Annotated[str, _ci(36, 1)]
Id39 = Annotated[str, _ci(39, 1)]
# string(n)
String3 = Annotated[str, _text(3)]
String10 = Annotated[str, _text(10)]
String11 = Annotated[str, _text(11)]
String20 = Annotated[str, _text(20)]
String45 = Annotated[str, _text(45)]
String100 = Annotated[str, _text(100)]
String255 = Annotated[str, _text(255)]
String512 = Annotated[str, _text(512)]
# SignedValue's data: base64 or the encoding's own text, which may span lines.
Blob5000 = Annotated[str, msgspec.Meta(max_length=5000)]
CountryCode = Annotated[str, msgspec.Meta(pattern=r"\A[A-Za-z]{2}\Z")]
PartyId = Annotated[str, msgspec.Meta(pattern=r"\A[A-Za-z0-9]{3}\Z")]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=_PRINTABLE_ASCII)]
DateTime = datetime


def as_utc(moment: datetime) -> datetime:
    """An OCPI DateTime as an aware UTC time (no zone designator means UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def check_number(value: Decimal, name: str, low: Decimal, high: Decimal) -> Decimal:
    """`value` if it is a finite number in [low, high]; ValueError naming `name` otherwise
    (msgspec reports it as the field's validation error)."""
    if not value.is_finite() or not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low} to {high}")
    return value


def decode(body: bytes, type_: type[T]) -> T:
    """`body` as an OCPI object of `type_` (see the module docstring for the errors)."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as error:
        raise OcpiError(Status.INVALID_PARAMETERS, _readable(str(error))) from None
    except (msgspec.DecodeError, RecursionError):
        raise OcpiError(
            Status.CLIENT_ERROR, "the request body is not valid JSON (UTF-8)", http_status=400
        ) from None


def _readable(message: str) -> str:
    """msgspec's `Expected ... - at `$.a.b`` as `a.b: expected ...` (the object's own path)."""
    what, sep, where = message.rpartition(" - at `")
    if not sep:
        return message
    path = where.rstrip("`").removeprefix("$").removeprefix(".") or "body"
    return f"{path}: {what[:1].lower()}{what[1:]}"
