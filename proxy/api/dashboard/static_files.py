"""The dashboard's style sheet and script, served from this package by name.

Only the files named in `_FILES` exist (no path from a request ever reaches the file system).
Each is read once, at import, and served with its media type, `nosniff` and a year's caching:
pages link it as `static_url(name)`, whose `?v=` is a digest of its content, so a new version
is a new URL.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from fastapi.responses import Response

__all__ = ["static_response", "static_url"]

_FILES = {
    "dashboard.css": "text/css; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
}
_CONTENT = {name: (files(__package__) / "static" / name).read_bytes() for name in _FILES}
_VERSION = {name: hashlib.sha256(body).hexdigest()[:12] for name, body in _CONTENT.items()}


def static_url(name: str) -> str:
    """The URL of the static file `name` (KeyError for a file that does not exist)."""
    return f"/dashboard/static/{name}?v={_VERSION[name]}"


def static_response(name: str) -> Response:
    """The file `name`, or a 404."""
    if name not in _CONTENT:
        return Response(status_code=404, headers={"X-Content-Type-Options": "nosniff"})
    return Response(
        _CONTENT[name],
        media_type=_FILES[name],
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )
