"""The partner API attacked over real HTTP, by a hostile partner and by a curious one: scopes
reached around through webhooks, clients that send a request slowly or from many addresses of
one network, requests whose cost grows with what they carry (MID scans, statement PDFs), HTTP
semantics (HEAD, 405's Allow, a trailing slash), and what the statement documents carry when
names and branding hold markup, or belong to another partner."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
import trio
from fpdf import FPDF

from proxy.api import body_limit
from proxy.api.context import ApiContext
from proxy.api.key_store import create_key
from proxy.api.keys import SCOPES, parse_key
from proxy.store import open_database
from testkit.ere_admin import EAN_1
from testkit.ere_books import Q3, add_session, close, config, pay, seed
from testkit.partner_api import call, enrolment, idem, partner_with_key, problem_of, serving_api
from testkit.pdf_text import pdf_text

ALL = SCOPES
WEBHOOKS_ONLY = ("webhooks:write",)
# No refill within a test: every refusal is an allowance spent, never a race with the clock.
SLOW = 0.001


async def make_webhook(port, key, events, url="https://hooks.example.com/ere"):
    body = {"url": url, "events": list(events)}
    return await call(port, "POST", "/v1/webhooks", key=key, json_body=body, headers=idem())


async def token_for(port, key, scope: str) -> str:
    key_id, secret = parse_key(key)
    form = {
        "grant_type": "client_credentials",
        "client_id": key_id,
        "client_secret": secret,
        "scope": scope,
    }
    reply = await call(
        port,
        "POST",
        "/v1/oauth/token",
        body=urlencode(form).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 200, reply.body
    return reply.json()["access_token"]


# Each event type, and the read scope its data needs.
EVENT_SCOPES = {
    "customer.enrolled": "customers:read",
    "session.completed": "sessions:read",
    "statement.issued": "statements:read",
    "payout.sent": "payouts:read",
    "mandate.expiring": "customers:read",
}


async def test_a_webhook_carries_only_events_the_key_may_read(settings):
    """`webhooks:write` alone must not be a way around the read scopes: an endpoint of one's
    own would otherwise receive (and its delivery log show) sessions, payouts, statements and
    customers the key may not read, and so would an access token narrowed to it."""
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        full = await partner_with_key(db, "acme", ALL)
        narrow = (await create_key(db, "acme", WEBHOOKS_ONLY)).key
        token = await token_for(port, full, "webhooks:write")
        for credential in (narrow, token):
            for event, scope in EVENT_SCOPES.items():
                problem = problem_of(await make_webhook(port, credential, [event]), 403)
                assert scope in problem["detail"] and event in problem["detail"]
        assert await db.fetchval("SELECT count(*) FROM webhook_endpoints") == 0
        # With the scope, the same request is made.
        reader = (await create_key(db, "acme", ("webhooks:write", "customers:read"))).key
        made = await make_webhook(port, reader, ["customer.enrolled", "mandate.expiring"])
        assert made.status == 201, made.body

        # An endpoint the full key made: its log shows the narrow key no event it may not
        # read, and such a delivery cannot be replayed by it; a ping it may see.
        hook = (await make_webhook(port, full, ["customer.enrolled"])).json()
        enrolled = await call(
            port, "POST", "/v1/customers", key=full, json_body=enrolment(EAN_1), headers=idem()
        )
        assert enrolled.status == 201, enrolled.body
        log = f"/v1/webhooks/{hook['id']}/deliveries"
        (delivery,) = (await call(port, "GET", log, key=full)).json()["data"]
        assert EAN_1 in delivery["body"]
        ping = await call(
            port, "POST", f"/v1/webhooks/{hook['id']}/ping", key=narrow, headers=idem()
        )
        assert ping.status == 201, ping.body
        for credential in (narrow, token):
            shown = (await call(port, "GET", log, key=credential)).json()["data"]
            assert [d["event_type"] for d in shown] == ["webhook.ping"]
            assert EAN_1 not in json.dumps(shown)
            replay = f"{log}/{delivery['id']}/replay"
            problem_of(await call(port, "POST", replay, key=credential, headers=idem()), 404)
        assert (
            await call(port, "POST", f"{log}/{delivery['id']}/replay", key=full, headers=idem())
        ).status == 201


async def test_a_body_sent_too_slowly_is_answered_408_and_the_connection_closed(
    settings, monkeypatch
):
    """A client that declares a body and trickles it (or stops) must not hold a connection
    and its buffer for ever: the body has a deadline from the request's head on."""
    monkeypatch.setattr(body_limit, "BODY_SECONDS", 0.5)
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            head = (
                "POST /v1/customers HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                f"authorization: Bearer {key}\r\nidempotency-key: slow\r\n"
                "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"
            )
            await stream.send_all(head.encode())
            answer = b""
            with trio.fail_after(20):  # a guard against hanging, not a measurement
                while chunk := await stream.receive_some(65536):
                    answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408"), answer
        headers, _, body = rest.partition(b"\r\n\r\n")
        assert b"content-type: application/problem+json" in headers.lower()
        assert json.loads(body)["status"] == 408
        assert await db.fetchval("SELECT count(*) FROM customers") == 0
        # A request sent at a normal pace goes through.
        reply = await call(
            port, "POST", "/v1/customers", key=key, json_body=enrolment(EAN_1), headers=idem()
        )
        assert reply.status == 201, reply.body


async def test_failed_authentications_count_per_ipv6_network_not_per_address(settings):
    """One IPv6 subscriber holds a /64: counting failures per address would give a guesser
    2^64 fresh allowances. An IPv4 address written IPv4-mapped is the same address."""
    limits = {"failed_auth_burst": 2, "failed_auth_per_second": SLOW, "forwarded_for_hops": 1}
    async with serving_api(settings, **limits) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read",))

        async def from_address(address: str, credential: str):
            forwarded = {"x-forwarded-for": address}
            return await call(port, "GET", "/v1/customers", key=credential, headers=forwarded)

        problem_of(await from_address("2001:db8:1:2::1", "guess"), 401)
        problem_of(await from_address("2001:db8:1:2::2", "guess"), 401)
        problem_of(await from_address("2001:db8:1:2:ffff::9", key), 429)
        assert (await from_address("2001:db8:1:3::1", key)).status == 200  # another network

        problem_of(await from_address("203.0.113.7", "guess"), 401)
        problem_of(await from_address("::ffff:203.0.113.7", "guess"), 401)
        problem_of(await from_address("203.0.113.7", key), 429)
        assert (await from_address("203.0.113.8", key)).status == 200


async def test_a_scan_costs_the_key_one_request_per_hundred_chargers(settings):
    """A scan of 10,000 chargers is a 40 KB request that costs a second of CPU and stores 4 MB
    of report: counted as one request, a key's burst would buy a hundred of them at once."""
    limits = {"rate_limit_burst": 50, "rate_limit_per_second": SLOW}
    async with serving_api(settings, **limits) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        portfolio = {"chargers": [{} for _ in range(2000)]}
        remaining = []
        for _ in range(2):
            scan = await call(
                port, "POST", "/v1/scans", key=key, json_body=portfolio, headers=idem()
            )
            assert scan.status == 201, scan.body
            remaining.append(scan.headers["ratelimit-remaining"])
        assert remaining == ["29", "8"]  # 1 + 20 each
        again = await call(port, "POST", "/v1/scans", key=key, json_body=portfolio, headers=idem())
        problem = problem_of(again, 429)
        assert problem["type"] == "urn:ere-proxy:problem:rate-limited"
        assert int(again.headers["retry-after"]) >= 1
        assert await db.fetchval("SELECT count(*) FROM mid_scans") == 2
        # The refusal took only the request's own token: small requests go on.
        small = await call(
            port, "POST", "/v1/scans", key=key, json_body={"chargers": [{}]}, headers=idem()
        )
        assert small.status == 201, small.body
        assert small.headers["ratelimit-remaining"] == "6"
        # However large, a scan costs at most half a burst: two can always be made at once.
        huge = {"chargers": [{} for _ in range(10_000)]}
        async with serving_api(settings, **limits) as (_, fresh):
            for left in ("25", "0"):
                made = await call(
                    fresh, "POST", "/v1/scans", key=key, json_body=huge, headers=idem()
                )
                assert made.status == 201, made.body
                assert made.headers["ratelimit-remaining"] == left


async def test_head_is_a_get_without_its_body_and_405_names_every_method(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        created = await call(
            port, "POST", "/v1/customers", key=key, json_body=enrolment(EAN_1), headers=idem()
        )
        path = f"/v1/customers/{created.json()['id']}"
        got = await call(port, "GET", path, key=key)
        head = await call(port, "HEAD", path, key=key)
        assert head.status == 200 and head.body == b""
        assert head.headers["etag"] == got.headers["etag"]
        assert head.headers["content-length"] == str(len(got.body))
        assert head.headers["content-type"] == "application/json"
        assert (await call(port, "HEAD", "/v1/customers", key=key)).status == 200
        missing = await call(port, "HEAD", "/v1/customers/cus_nobody", key=key)
        assert (missing.status, missing.body) == (404, b"")

        for method, target, allowed in (
            ("DELETE", "/v1/customers", {"GET", "HEAD", "POST"}),
            ("PUT", "/v1/customers", {"GET", "HEAD", "POST"}),
            ("DELETE", path, {"GET", "HEAD", "PATCH"}),
            ("GET", "/v1/keys/current/rotate", {"POST"}),
            ("GET", "/v1/oauth/token", {"POST"}),
        ):
            reply = await call(port, method, target, key=key)
            problem_of(reply, 405)
            named = {part.strip() for part in reply.headers["allow"].split(",")}
            assert named == allowed, (method, target, reply.headers["allow"])


async def test_a_trailing_slash_is_not_redirected_to_the_host_the_client_named(settings):
    """A redirect built from the request's Host header sends a client (and its bearer key,
    with some clients) wherever the request said; and it is no problem+json."""
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        for path in ("/v1/customers/", "/v1/webhooks/", "/v1/statements/"):
            reply = await call(port, "GET", path, key=key, headers={"host": "evil.example"})
            assert "location" not in reply.headers, reply.headers
            problem_of(reply, 404)


async def hostile_books(settings, tmp_path) -> ApiContext:
    """The ERE books with markup in customer A's name and its partner's branding, Q3 closed
    and paid."""
    cfg = config(settings, tmp_path)
    branding = {
        "display_name": "<script>alert('brand')</script>",
        "footer_text": '<img src=x onerror="alert(1)">',
        "intro_nl": "</p><iframe src=//evil.example></iframe>",
    }
    async with open_database(settings) as db:
        await seed(db)
        await db.execute(
            "UPDATE customers SET name = $1 WHERE customer_id = 'A'",
            '"><svg onload=alert(document.domain)>',
        )
        await db.execute(
            "UPDATE partners SET branding = $1::jsonb WHERE partner_id = 'P1'", json.dumps(branding)
        )
        await add_session(db, "CP-A", "a-aug", datetime(2026, 8, 5, 8, tzinfo=UTC), "25")
        assert "close:done" in await close(db, cfg, Q3)
        assert "statements:done" in await pay(db, cfg, Q3)
    return dataclasses.replace(ApiContext.bare(), ere=cfg.ere)


async def test_the_html_statement_escapes_markup_and_forbids_scripts(settings, tmp_path):
    """The statement's HTML is served from the API's own origin: every supplied text is
    escaped, and the page is sent with a policy that runs no script and loads nothing but
    images, so a slip in a template could not become script on this origin either."""
    context = await hostile_books(settings, tmp_path)
    async with serving_api(settings, context=context) as (db, port):
        key = (await create_key(db, "P1", ("statements:read",))).key
        reply = await call(port, "GET", "/v1/statements/2026Q3-A?format=html", key=key)
        assert reply.status == 200, reply.body
        page = reply.body.decode()
        for raw in ("<script>", "<svg", "<img src=x", "<iframe"):
            assert raw not in page, raw
        assert "&lt;script&gt;" in page and "&lt;svg onload" in page
        policy = reply.headers["content-security-policy"]
        directives = {d.strip().split(" ")[0]: d.strip() for d in policy.split(";")}
        assert directives["default-src"] == "default-src 'none'"
        assert "script-src" not in directives  # none: default-src 'none' forbids scripts
        assert reply.headers["x-content-type-options"] == "nosniff"
        pdf = await call(port, "GET", "/v1/statements/2026Q3-A?format=pdf", key=key)
        assert pdf.status == 200 and pdf.headers["x-content-type-options"] == "nosniff"


async def test_a_statement_pdf_is_rendered_once_while_it_is_unchanged(
    settings, tmp_path, monkeypatch
):
    """A PDF takes about half a millisecond of CPU per session: asked for again and again, a
    large statement would keep the API busy. Unchanged, it is rendered once; a change to what
    it shows renders it anew."""
    renders = []
    output = FPDF.output

    def counted(pdf, *args, **kwargs):
        renders.append(pdf)
        return output(pdf, *args, **kwargs)

    monkeypatch.setattr(FPDF, "output", counted)
    context = await hostile_books(settings, tmp_path)
    async with serving_api(settings, context=context) as (db, port):
        key = (await create_key(db, "P1", ("statements:read",))).key
        path = "/v1/statements/2026Q3-A?format=pdf"
        first, second = [await call(port, "GET", path, key=key) for _ in range(2)]
        assert first.status == second.status == 200, first.body
        assert first.body == second.body and len(renders) == 1
        await db.execute("UPDATE customers SET name = 'Anna Bakker' WHERE customer_id = 'A'")
        renamed = await call(port, "GET", path, key=key)
        assert renamed.status == 200 and len(renders) == 2
        assert "Anna Bakker" in pdf_text(renamed.body)


@pytest.mark.parametrize("accept", ["text/html", "application/pdf"])
async def test_another_partners_statement_document_is_404_like_a_missing_one(
    settings, tmp_path, accept
):
    """Asked for as a document, another partner's statement is the same 404 as one that does
    not exist: no file name, no 409 for a pending run, nothing that tells them apart."""
    context = await hostile_books(settings, tmp_path)
    async with serving_api(settings, context=context) as (db, port):
        other = (await create_key(db, "P2", ("statements:read",))).key
        replies = [
            await call(port, "GET", f"/v1/statements/{name}", key=other, headers={"accept": accept})
            for name in ("2026Q3-A", "2026Q3-Z", "2026Q4-A")
        ]
        problems = [problem_of(reply, 404) for reply in replies]
        assert problems[0] == problems[1] == problems[2]
        for reply in replies:
            assert "content-disposition" not in reply.headers
            assert b"2026Q" not in reply.body
