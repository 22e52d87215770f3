"""OCPI pagination, sans-IO (transport and format: pagination).

A list is asked for with `offset` (default 0), `limit` (at most `MAX_LIMIT`, the default too:
a larger one is lowered, as the spec lets a server do), and `date_from` (inclusive) and
`date_to` (exclusive) on `last_updated`. The answer's headers: `X-Total-Count` (the objects
matching the filters), `X-Limit` (the most we return at once) and, unless it is the last page,
`Link: <url>; rel="next"` with the same filters.

Errors: `OcpiError` status 2001 for a parameter that is not a number or a DateTime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

import msgspec

from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.values import as_utc

__all__ = ["MAX_LIMIT", "Page", "page_headers", "parse_page"]

MAX_LIMIT = 100
_MAX_OFFSET = 10**9


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int
    date_from: datetime | None
    date_to: datetime | None


def _number(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise OcpiError(Status.INVALID_PARAMETERS, f"{name} must be a whole number from 0")
    return int(text)


def _moment(query: Mapping[str, str], name: str) -> datetime | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        moment = msgspec.json.decode(msgspec.json.encode(text[:40]), type=datetime)
    except msgspec.ValidationError:
        raise OcpiError(
            Status.INVALID_PARAMETERS, f"{name} must be a DateTime like 2019-01-28T12:00:00Z"
        ) from None
    return as_utc(moment)


def _stamp(moment: datetime) -> str:
    """A UTC DateTime as given, fractions kept (the next page filters exactly as this one)."""
    return moment.isoformat().replace("+00:00", "Z")


def parse_page(query: Mapping[str, str]) -> Page:
    """The page a list request asks for."""
    offset = min(_number(query, "offset", 0), _MAX_OFFSET)
    limit = min(_number(query, "limit", MAX_LIMIT), MAX_LIMIT)
    return Page(offset, limit, _moment(query, "date_from"), _moment(query, "date_to"))


def page_headers(page: Page, total: int, url: str) -> dict[str, str]:
    """The pagination headers of a page of `total` objects at `url` (the list's own URL)."""
    headers = {"X-Total-Count": str(total), "X-Limit": str(MAX_LIMIT)}
    following = page.offset + page.limit
    if page.limit and following < total:
        query = {"offset": str(following), "limit": str(page.limit)}
        if page.date_from is not None:
            query["date_from"] = _stamp(page.date_from)
        if page.date_to is not None:
            query["date_to"] = _stamp(page.date_to)
        headers["Link"] = f'<{url}?{urlencode(query)}>; rel="next"'
    return headers
