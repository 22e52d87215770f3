"""The partner API's OpenAPI document as test cases: its operations, and a valid request body
for each request schema.

`operations(document)` lists (method, path, operation) for every operation of the document;
`body_schema(operation)` names the schema of its JSON request body (None if it takes none);
`valid_body(schema, n)` is the n-th valid body for a request schema, different for each `n`
where the API wants unique values (an EAN). A schema without an entry in `BODIES` is a KeyError
naming it: a new request schema needs a fixture here before the matrix and schema tests pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from testkit.ere_admin import ean
from testkit.partner_api import enrolment

__all__ = ["BODIES", "body_schema", "fresh_ean", "operations", "valid_body"]

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def fresh_ean(n: int) -> str:
    """The n-th EAN of a range no other test uses, with its check digit."""
    return ean(f"8716999{n:010d}")


BODIES: dict[str, Callable[[int], dict[str, Any]]] = {
    "CustomerIn": lambda n: enrolment(fresh_ean(n)),
}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in sorted(document["paths"].items()):
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def body_schema(operation: dict[str, Any]) -> str | None:
    content = operation.get("requestBody", {}).get("content", {})
    if not content:
        return None
    schema = content.get("application/json", {}).get("schema", {})
    reference = schema.get("$ref", "")
    assert reference.startswith("#/components/schemas/"), f"an unnamed request body: {schema}"
    return str(reference.rpartition("/")[2])


def valid_body(schema: str, n: int) -> dict[str, Any]:
    try:
        make = BODIES[schema]
    except KeyError:
        raise KeyError(f"no valid {schema} body: add one to testkit.openapi_cases.BODIES") from None
    return make(n)
