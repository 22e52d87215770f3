"""A partner's whole journey through the partner API, with every role of `ere-proxy run` running
on the embedded PostgreSQL and the clock of each day (libfaketime).

The operator adds the partner and gives it a key (CLI). The partner, through the API only:
subscribes a webhook endpoint, enrols a customer, registers the customer's charger (getting its
OCPP URL and password once) and links it. The charger (the `ocpp` package over `websockets`)
charges through the proxy with those credentials to an independent back-office. The partner
sees the session and its eligibility; after the quarter has ended the operator closes and pays
it; the partner fetches the statement (JSON and PDF) and the payout. Every webhook arrives at a
local receiver (a plain HTTP server in the test) with a valid signature.

Hand computation (2026: 1 kWh = 0.505 × 183 × 3.6 / 1000 = 0.332694 ERE; €0.30 per ERE; fee
20 %, VAT inside it 21/121; direct payout, minimum €1.00):
  30 kWh → 9.98 ERE (9.98082) → €2.99 (2.994); fee 0.60 (0.598; VAT 0.10); net 2.39, paid.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from proxy.api.keys import SCOPES
from proxy.api.webhook_signing import verify
from proxy.ere.core.ean import check_digit
from testkit.pdf_text import pdf_text
from testkit.ports import free_port
from testkit.postgres import make_data_dir
from testkit.proxy_process import CONFIG, log_problems
from testkit.system_roles import Roles, charge, wait_for_sessions

pytestmark = pytest.mark.slow

D = Decimal
_local = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-journey-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Receiver(ThreadingHTTPServer):
    """The partner's webhook endpoint: records (headers, body) of every POST, answers 204."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ere-hook"

    def events(self) -> dict[str, tuple[dict[str, str], bytes]]:
        """The deliveries so far by event type (the last of each)."""
        with self.lock:
            return {headers["ere-event-type"]: (headers, body) for headers, body in self.received}


class _Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        with self.server.lock:
            self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def signed_events(
    receiver: Receiver, secret: str, day: str, *types: str
) -> dict[str, dict[str, Any]]:
    """The events of `types` once each has arrived, every one signed with `secret` at a time
    within 10 minutes of `day` (the clock the roles ran with)."""
    events = wait_until(
        lambda: (found := receiver.events()).keys() >= set(types) and found,
        f"webhooks {types} did not all arrive: {sorted(receiver.events())}",
    )
    now = datetime.fromisoformat(day + "+00:00").timestamp()
    documents = {}
    for kind in types:
        headers, body = events[kind]
        assert verify(headers["ere-signature"], body, secret, now, tolerance=600), kind
        assert not verify(headers["ere-signature"], body + b" ", secret, now, tolerance=600)
        document = json.loads(body)
        assert document["type"] == kind and headers["ere-event-id"] == document["id"]
        documents[kind] = document["data"]
    return documents


class Partner:
    """The partner's integration: JSON over HTTP with its key."""

    def __init__(self, port: int, key: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.key = key

    def request(
        self, method: str, path: str, body: Any = None, *, accept: str = "application/json"
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": f"Bearer {self.key}", "Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with _local.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        status, _, content = self.request(method, path, body)
        assert status == expect, (method, path, status, content)
        return json.loads(content)


def serves_api(port: int) -> bool:
    try:
        with _local.open(f"http://127.0.0.1:{port}/v1/openapi.json", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(predicate, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value


def test_a_partner_enrols_registers_charges_and_is_paid_through_the_api(
    tmp_path: Path, data_dir: Path, receiver: Receiver
) -> None:
    api_port = free_port()
    roles = Roles(
        tmp_path / "proxy.toml",
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        tmp_path / "run.stderr",
    )
    template = CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    template = template.replace(
        "[registry]\nenabled = false\n",
        '[registry]\nenabled = true\npublic_url = "ws://127.0.0.1:{port}/ocpp"\n',
    )
    template += (
        f'\n[database]\ndata_dir = "{data_dir}"\n'
        f"\n[ere]\nworkers = 1\nadmin_port = {roles.worker_admin}\npoll_interval = 0.2\n"
        'payout_minimum = "1.00"\n'
        f'payout_dir = "{tmp_path / "payouts"}"\nstatement_dir = "{tmp_path / "statements"}"\n'
        'debtor_name = "ERE Provider BV"\ndebtor_iban = "NL91ABNA0417164300"\n'
        'debtor_bic = "ABNANL2A"\nprovider_name = "ERE Provider BV"\n'
        'provider_address = "Stationsplein 1, 3511 ED Utrecht"\nprovider_kvk = "12345678"\n'
        'provider_vat_number = "NL123456789B01"\nprovider_nea_account = "NEA-000123"\n'
        f'\n[api]\nenabled = true\nhost = "127.0.0.1"\nport = {api_port}\n'
        "webhooks_allow_private = true\nupstreams_allow_private = true\n"
        "webhook_scan_interval = 0.5\n"
    )
    roles.config.write_text(
        template.format(
            port=roles.port, admin_port=roles.admin_port, upstream_port=roles.upstream_port
        )
    )
    ean = "87168712000000021"
    ean += str(check_digit(ean))

    # -- 4 May: the operator makes the partner and its key; the partner enrols and registers.
    may, july = "2026-05-04 09:00:00", "2026-07-10 09:00:00"
    with roles.on(may) as op:
        op.run("partners", "add", "P1", "--name", "Installer One", "--kind", "installer",
               "--payout-model", "direct")  # fmt: skip
        key = op.run("partners", "keys", "create", "P1", "--scopes", ",".join(SCOPES)).split()[-1]
        wait_until(lambda: serves_api(api_port), "the partner API did not start")
        partner = Partner(api_port, key)
        secret = partner.json("POST", "/v1/webhooks", {
            "url": receiver.url(), "events": ["customer.enrolled", "session.completed",
                                              "statement.issued", "payout.sent"],
        }, expect=201)["secret"]  # fmt: skip
        customer = partner.json("POST", "/v1/customers", {
            "name": "Anna de Vries", "email": "anna@example.nl", "address": "Kerkstraat 1",
            "postcode": "1234 AB", "city": "Utrecht", "ean": ean, "grid_operator": "Stedin",
            "iban": "NL91ABNA0417164300",
            "consent": {"text_version": "v3", "accepted_at": "2026-05-03T18:00:00+00:00",
                        "user_reference": "user-4711"},
        }, expect=201)  # fmt: skip
        credentials = partner.json("POST", "/v1/chargers", {
            "identity": "CP-ANNA", "upstream": f"ws://127.0.0.1:{roles.upstream_port}/ocpp",
        }, expect=201)  # fmt: skip
        assert credentials["ocpp_url"] == f"ws://127.0.0.1:{roles.port}/ocpp/CP-ANNA"
        partner.json("POST", "/v1/chargers/CP-ANNA/links", {
            "customer_id": customer["id"], "max_power_w": 11000,
            "valid_from": "2026-05-04T00:00:00+02:00",
        }, expect=201)  # fmt: skip
        basic = b64encode(f"{credentials['username']}:{credentials['password']}".encode())
        asyncio.run(
            charge(
                roles,
                [("CP-ANNA", "2026-05-04T00:30:00+00:00", "30")],
                {"CP-ANNA": {"Authorization": f"Basic {basic.decode()}"}},
            )
        )
        wait_for_sessions(data_dir, 1)
        (session,) = partner.json("GET", f"/v1/sessions?customer_id={customer['id']}")["data"]
        assert (session["status"], session["charger"]) == ("completed", "CP-ANNA")
        assert (D(session["energy_kwh"]), session["meter_class"]) == (D("30"), "declared")
        assert session["quarter"] == "2026Q2" and session["eligibility"] is None  # not closed yet
        charger = partner.json("GET", "/v1/chargers/CP-ANNA")
        assert charger["last_boot"]["meter_type"] == "Iskra WM3M4"
        events = signed_events(receiver, secret, may, "customer.enrolled", "session.completed")
        assert customer["id"] in json.dumps(events["customer.enrolled"])
        assert str(session["id"]) in json.dumps(events["session.completed"])

    # -- 10 July: Q2 has ended and had its grace period; the operator closes it and pays out.
    with roles.on(july) as op:
        op.run("quarter", "close", "2026Q2", "--wait")
        op.run("payout", "run", "2026Q2", "--wait")
        wait_until(lambda: serves_api(api_port), "the partner API did not start")
        (session,) = partner.json("GET", f"/v1/sessions?customer_id={customer['id']}")["data"]
        eligibility = session["eligibility"]
        assert (eligibility["status"], D(eligibility["kwh"])) == ("eligible", D("30")), eligibility
        assert [(line["quarter"], D(line["kwh"])) for line in session["statement_lines"]] == [
            ("2026Q2", D("30"))
        ]
        (summary,) = partner.json("GET", "/v1/statements?quarter=2026Q2")["data"]
        statement = partner.json("GET", f"/v1/statements/{summary['id']}")
        (line,) = statement["lines"]
        assert (D(line["kwh"]), D(line["ere"]), D(line["gross"])) == (D("30"), D("9.98"), D("2.99"))
        totals = statement["totals"]
        assert [D(totals[k]) for k in ("fee", "fee_vat", "net")] == [
            D("0.60"),
            D("0.10"),
            D("2.39"),
        ]
        assert statement["payout"]["status"] == "paid" and D(statement["payout"]["amount"]) == D(
            "2.39"
        )
        assert statement["invoice"]["number"].startswith("ERE-2026-")
        status, headers, pdf = partner.request(
            "GET", f"/v1/statements/{summary['id']}?format=pdf", accept="application/pdf"
        )
        assert status == 200 and headers["content-type"] == "application/pdf"
        text = " ".join(pdf_text(pdf).split())
        assert "Anna de Vries" in text and "€ 2,39" in text  # Dutch by default
        run = partner.json("GET", "/v1/payouts/2026Q2")
        (transfer,) = run["transfers"]
        assert (transfer["customer_id"], D(transfer["amount"])) == (customer["id"], D("2.39"))
        events = signed_events(receiver, secret, july, "statement.issued", "payout.sent")
        assert events["statement.issued"]["statement_id"] == summary["id"]
        assert "2026Q2" in json.dumps(events["payout.sent"])

    assert log_problems(roles.log.read_text()) == []
