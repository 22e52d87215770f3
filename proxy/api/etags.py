"""Entity tags and conditional requests: a reader is told when nothing changed, and a writer
never overwrites a change it has not seen.

An object's tag is strong: the SHA-256 of its answer as canonical JSON (keys sorted, no spaces,
ASCII), quoted, so it changes exactly when the answer does and needs nothing stored. A `GET`
with `If-None-Match` naming the current tag (or `*`) is answered 304 without a body
(`conditional_get`, weak comparison as RFC 9110 wants for it). A write that must not lose
another's change calls `require_match` with the current tag: no `If-Match` is 428, one naming
no current tag 412 (strong comparison: a weak tag never matches). The caller resolves the object
first, so another partner's object is 404 whatever the headers say.

Header values are parsed leniently: what is not a quoted tag is ignored, so a malformed header
matches nothing (a 412 for `If-Match`, a full answer for `If-None-Match`), never an error.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fastapi.responses import JSONResponse, Response

from proxy.api.problems import PROBLEM_JSON, Problem

__all__ = [
    "NOT_MODIFIED",
    "PRECONDITIONS",
    "conditional_get",
    "entity_tag",
    "matches_any",
    "none_match",
    "require_match",
    "tagged",
]

# What the OpenAPI document declares for conditional reads and writes.
_ETAG = {"ETag": {"description": "the object's strong entity tag", "schema": {"type": "string"}}}
_PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    200: {"headers": _ETAG},
    304: {"description": "Not Modified: `If-None-Match` names the current ETag; no body"},
}
PRECONDITIONS: dict[int | str, dict[str, Any]] = {
    200: {"headers": _ETAG},
    412: {"description": "`If-Match` names an ETag that is no longer current", "content": _PROBLEM},
    428: {"description": "`If-Match` is required", "content": _PROBLEM},
}

_TAG = re.compile(r'(W/)?("[\x21\x23-\x7e\x80-\xff]*")')


def entity_tag(body: Any) -> str:
    """The strong tag of an answer `body` (JSON-able, as it is sent)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest() + '"'


def _tags(header: str) -> list[tuple[bool, str]]:
    """(weak, opaque tag) of every well-formed tag in a header's list."""
    return [(bool(match[1]), match[2]) for match in _TAG.finditer(header)]


def matches_any(header: str, tag: str, *, weak: bool) -> bool:
    """Whether a list header (`*` or tags) names `tag`; `weak`: W/ tags count too."""
    if header.strip() == "*":
        return True
    return any(opaque == tag and (weak or not is_weak) for is_weak, opaque in _tags(header))


def none_match(if_none_match: str | None, tag: str) -> bool:
    """Whether a `GET` with this `If-None-Match` is answered 304 (the tag is current)."""
    return if_none_match is not None and matches_any(if_none_match, tag, weak=True)


def require_match(if_match: str | None, tag: str) -> None:
    """Problem 428 without `If-Match`, 412 when it names no current tag (strong comparison)."""
    if if_match is None:
        raise Problem(
            428,
            "If-Match is required: send the ETag of the object as you last read it, so a "
            "change made meanwhile is never overwritten",
            title="Precondition required",
            type_="urn:ere-proxy:problem:if-match-required",
            errors=[{"field": "If-Match", "detail": "is required"}],
        )
    if not matches_any(if_match, tag, weak=False):
        raise Problem(
            412,
            "the object changed since you read it (If-Match names another ETag); read it again, "
            "then apply your change to what it is now",
            title="Precondition failed",
            type_="urn:ere-proxy:problem:stale-etag",
        )


def tagged(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """`body` answered with its tag in `ETag`."""
    return JSONResponse(
        body, status_code=status, headers={**(headers or {}), "ETag": entity_tag(body)}
    )


def conditional_get(body: Any, if_none_match: str | None) -> Response:
    """The answer to a `GET` of one object: 304 with its tag if the caller has it, else `body`."""
    tag = entity_tag(body)
    if none_match(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    return JSONResponse(body, headers={"ETag": tag})
