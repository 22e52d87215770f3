"""The partner API's OpenAPI document as test cases: its operations, and a valid request body
for each request schema.

`operations(document)` lists (method, path, operation) for every operation of the document;
`body_schema(operation)` names the schema of its JSON request body (None if it takes none, or
a body other than JSON: the OAuth2 token request's form);
`valid_body(schema, n)` is the n-th valid body for a request schema, different for each `n`
where the API wants unique values (an EAN, a charger identity). A schema without an entry in
`BODIES` is a KeyError naming it: a new request schema needs a fixture here before the matrix
and schema tests pass. Ids of other objects in a body (a link's `customer_id`) are placeholders:
a caller puts in the ids of objects it made. `required_query(operation)` gives a valid value
for each required query parameter (from its example, enum or minimum);
`item_parameter(document, collection)` names the path parameter of a collection's objects;
`with_charger(body, identity)` puts a pushed batch's sessions on a charger of the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

from proxy.ere.core.quarters import DUTCH_TIME
from testkit.ere_admin import ean
from testkit.partner_api import enrolment

__all__ = [
    "BODIES",
    "body_schema",
    "fresh_ean",
    "item_parameter",
    "operations",
    "required_query",
    "supplied_session",
    "valid_body",
    "with_charger",
]

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def fresh_ean(n: int) -> str:
    """The n-th EAN of a range no other test uses, with its check digit."""
    return ean(f"8716999{n:010d}")


def today() -> date:
    """Today's Dutch date (mandates and their ends are Dutch days)."""
    return datetime.now(DUTCH_TIME).date()


def fresh_identity(n: int) -> str:
    """The n-th OCPP identity of a range no other test uses."""
    return f"CP-CASE-{n:06d}"


BODIES: dict[str, Callable[[int], dict[str, Any]]] = {
    "CustomerIn": lambda n: enrolment(fresh_ean(n)),
    "ChargerIn": lambda n: {
        "identity": fresh_identity(n),
        "upstream": "wss://csms.example.com/ocpp",
    },
    "LinkIn": lambda n: {"customer_id": "cus_case", "max_power_w": 11000},
    # `.example` never resolves (RFC 2606): the guard takes it, and nothing is ever sent there.
    "WebhookIn": lambda n: {
        "url": f"https://hooks.partner.example/ere/{n}",
        "events": ["session.completed", "payout.sent"],
    },
    "ScanIn": lambda n: {
        "chargers": [
            {"identity": fresh_identity(n)},
            {"meter_type": "Iskra WM3M4", "meter_serial": f"S-{n}", "declared_kwh_per_year": 2500},
        ]
    },
    "KeyRotationIn": lambda n: {"grace_hours": 1},  # the rotated key works an hour more
    # A session on a placeholder charger: a caller puts in one of its own (`with_charger`).
    "SessionBatchIn": lambda n: {"sessions": [supplied_session(n, fresh_identity(n))]},
    "CustomerPatch": lambda n: {"name": f"Klant {n}", "city": "Amersfoort"},
    "CustomerEndIn": lambda n: {"effective": today().isoformat(), "reason": "moved house"},
    "MandateIn": lambda n: {
        "year": today().year + 1,
        "consent": enrolment(fresh_ean(n))["consent"],
    },
}


def supplied_session(n: int, charger: str) -> dict[str, Any]:
    """The n-th session a partner pushes for `charger`: an hour on the n-th day of 2026."""
    start = datetime(2026, 1, 1, 8, tzinfo=DUTCH_TIME) + timedelta(days=n % 300)
    return {
        "id": f"case-{n}",
        "charger": charger,
        "started_at": start.isoformat(),
        "stopped_at": (start + timedelta(hours=1)).isoformat(),
        "energy_kwh": "3.5",
    }


def with_charger(body: dict[str, Any], charger: str) -> dict[str, Any]:
    """A `SessionBatchIn` body with every session on `charger` (other bodies as they are)."""
    if not isinstance(body.get("sessions"), list):
        return body
    return body | {"sessions": [item | {"charger": charger} for item in body["sessions"]]}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in sorted(document["paths"].items()):
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def body_schema(operation: dict[str, Any]) -> str | None:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    schema = content.get("application/json", {}).get("schema", {})
    reference = schema.get("$ref", "")
    assert reference.startswith("#/components/schemas/"), f"an unnamed request body: {schema}"
    return str(reference.rpartition("/")[2])


def item_parameter(document: dict[str, Any], collection: str) -> str | None:
    """`/v1/customers` → `customer_id`: the parameter of `{collection}/{...}`, if the document
    has such a path."""
    for path in document["paths"]:
        head, _, tail = path.rpartition("/")
        if head == collection.rstrip("/") and tail.startswith("{") and tail.endswith("}"):
            return tail[1:-1]
    return None


def required_query(operation: dict[str, Any]) -> dict[str, str]:
    """A valid value for each required query parameter of `operation`."""
    query = {}
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "query" or not parameter.get("required"):
            continue
        schema = parameter.get("schema", {})
        if "example" in parameter:
            value = parameter["example"]
        elif schema.get("examples"):
            value = schema["examples"][0]
        elif "enum" in schema:
            value = schema["enum"][0]
        elif "minimum" in schema:
            value = schema["minimum"]
        else:
            raise KeyError(f"no valid value for the query parameter {parameter['name']}")
        query[parameter["name"]] = str(value)
    return query


def valid_body(schema: str, n: int) -> dict[str, Any]:
    try:
        make = BODIES[schema]
    except KeyError:
        raise KeyError(f"no valid {schema} body: add one to testkit.openapi_cases.BODIES") from None
    return make(n)
