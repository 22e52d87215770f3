"""OCPI's response format and status codes, sans-IO.

Every answer is `{"data"?, "status_code", "status_message"?, "timestamp"}` (OCPI 2.2.1,
transport and format: response format). The status code says how the OCPI layer handled the
request: 1xxx success, 2xxx the client's data, 3xxx ours. A request that reached the OCPI layer
(valid JSON, a known resource, an authenticated and authorised sender) is answered HTTP 200
whatever its status code; HTTP errors are for what never got there (401, 404, 405, 400 for
JSON that does not parse). `OcpiError` carries both.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["OcpiError", "Status", "envelope", "timestamp"]


class Status(enum.IntEnum):
    """OCPI status codes (status_codes.asciidoc); the 9xx ranges are custom and unused here."""

    SUCCESS = 1000
    CLIENT_ERROR = 2000
    INVALID_PARAMETERS = 2001
    NOT_ENOUGH_INFORMATION = 2002
    UNKNOWN_LOCATION = 2003
    UNKNOWN_TOKEN = 2004
    SERVER_ERROR = 3000
    CLIENT_API_UNUSABLE = 3001
    UNSUPPORTED_VERSION = 3002
    NO_MATCHING_ENDPOINTS = 3003


class OcpiError(Exception):
    """An answer other than success: `status` (OCPI) over `http_status` (200 once the request
    reached the OCPI layer), with a message saying what is wrong."""

    def __init__(
        self,
        status: Status,
        message: str,
        *,
        http_status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.http_status = status, message, http_status
        self.headers = dict(headers or {})


def timestamp(moment: datetime) -> str:
    """An OCPI DateTime: UTC, `Z`, whole seconds (`2015-06-29T20:39:09Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(
    status: Status, now: datetime, data: Any = None, message: str | None = None
) -> dict[str, Any]:
    """The response object; `data` and `status_message` are left out when None."""
    body: dict[str, Any] = {}
    if data is not None:
        body["data"] = data
    body["status_code"] = int(status)
    if message is not None:
        body["status_message"] = message
    body["timestamp"] = timestamp(now)
    return body
