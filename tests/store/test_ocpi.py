"""OCPI 2.2.1 over real HTTP against the embedded PostgreSQL: a CPO's platform registers with the
token A the operator gave it, pushes CDRs (unsigned and signed) and live sessions, and reads
back what we hold; hostile and mistaken requests are answered as the spec wants, never 5xx."""

from __future__ import annotations

import base64
import json
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import trio

from proxy.api.context import ApiContext
from proxy.api.ocpi.platforms import create_platform
from proxy.api.ocpi.tokens import digest
from proxy.ere.admin.charger_grants import grant_chargers
from proxy.routing.registry.sealing import KeyRing, generate_key
from proxy.runtime.config import ApiSettings, Config, OcpiSettings
from proxy.store.db import Database
from testkit.ere_admin import Admin, partner_args
from testkit.ocpi_client import (
    CPO,
    OURS,
    OcpiClient,
    body_of,
    register,
    serving_platform,
    token_header,
)
from testkit.ocpi_samples import (
    credentials,
    keba_cdr,
    signed_cdr,
    spec_cdr,
    spec_session_finished,
)
from testkit.partner_api import call, partner_with_key, serving_api

OCPI = OcpiSettings(allow_private=True)


@asynccontextmanager
async def ocpi_api(settings, **api: Any):
    async with serving_api(settings, ocpi=OCPI, **api) as (db, port):
        yield db, port


async def new_platform(db: Database, partner_id: str) -> str:
    """A partner with an OCPI platform; its token A."""
    await partner_with_key(db, partner_id, ("sessions:read",))
    _, token_a = await create_platform(db, partner_id)
    return token_a


@asynccontextmanager
async def registered(db: Database, port: int, partner_id: str, *roles: tuple[str, str, str]):
    token_a = await new_platform(db, partner_id)
    async with serving_platform(f"token-b-{partner_id}") as platform:
        client = await register(port, token_a, platform, *roles)
        yield client, token_a, platform


def url_path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def test_versions_and_details_name_our_endpoints(settings):
    async with ocpi_api(settings) as (db, port):
        token_a = await new_platform(db, "acme")
        client = OcpiClient(port, token_a)
        endpoints = await client.discover(f"http://127.0.0.1:{port}/ocpi/versions")
        base = f"http://127.0.0.1:{port}/ocpi/2.2.1"
        assert endpoints == {
            "credentials": f"{base}/credentials",
            "cdrs": f"{base}/cdrs",
            "sessions": f"{base}/sessions",
        }
        details = body_of(await client.request("GET", f"{base}"))["data"]
        roles = {e["identifier"]: e["role"] for e in details["endpoints"]}
        assert roles == {"credentials": "SENDER", "cdrs": "RECEIVER", "sessions": "RECEIVER"}
        ours = body_of(await client.request("GET", endpoints["credentials"]))["data"]
        assert ours == {
            "token": token_a,
            "url": f"http://127.0.0.1:{port}/ocpi/versions",
            "roles": [
                {
                    "role": "OTHER",
                    "business_details": {"name": "ERE proxy"},
                    "party_id": OURS[1],
                    "country_code": OURS[0],
                }
            ],
        }


async def test_the_handshake_swaps_token_a_for_token_c(settings):
    async with (
        ocpi_api(settings) as (db, port),
        registered(db, port, "acme") as (
            client,
            token_a,
            platform,
        ),
    ):
        # The registration fetched the platform's versions and details with token B.
        assert [(m, p) for m, p, _ in platform.requests] == [
            ("GET", "/ocpi/cpo/versions"),
            ("GET", "/ocpi/cpo/2.2.1"),
        ]
        assert {a for _, _, a in platform.requests} == {token_header(platform.token_b)}
        stored = await db.fetchrow(
            "SELECT status, token_b, versions_url, roles::text AS roles, endpoints::text AS e "
            "FROM ocpi_platforms"
        )
        assert stored["status"] == "registered"
        assert stored["token_b"] == platform.token_b  # no registry key configured: kept as is
        assert stored["versions_url"] == platform.versions_url
        assert json.loads(stored["roles"]) == [
            {"role": "CPO", "country_code": "BE", "party_id": "BEC", "name": "Example CPO BE/BEC"}
        ]
        assert {e["identifier"] for e in json.loads(stored["e"])} == {
            "credentials",
            "cdrs",
            "sessions",
        }
        # Token A is gone, everywhere; token C works.
        old = OcpiClient(port, token_a, endpoints=client.endpoints)
        for method, url in (
            ("GET", f"http://127.0.0.1:{port}/ocpi/versions"),
            ("GET", client.url("credentials")),
            ("POST", client.url("credentials")),
            ("GET", client.url("cdrs")),
        ):
            body_of(await old.request(method, url), 401, 2000)
        assert (
            body_of(await client.request("GET", client.url("credentials")))["data"]["token"]
            == client.token
        )
        # Registered already: POST is 405; PUT renews token C and the old one stops.
        again = credentials(platform.token_b, platform.versions_url)
        reply = await client.request("POST", client.url("credentials"), again)
        body_of(reply, 405, 2000)
        assert "PUT" in reply.headers["allow"]
        renewed = body_of(await client.request("PUT", client.url("credentials"), again))["data"]
        body_of(await client.request("GET", client.url("cdrs")), 401, 2000)
        client.token = renewed["token"]
        body_of(await client.request("GET", client.url("cdrs")))
        # DELETE unregisters: the token then only serves versions and credentials.
        body_of(await client.request("DELETE", client.url("credentials")))
        body_of(await client.request("GET", client.url("cdrs")), 401, 2000)
        body_of(await client.request("DELETE", client.url("credentials")), 405, 2000)
        body_of(await client.request("PUT", client.url("credentials"), again), 405, 2000)
        client.token = body_of(await client.request("POST", client.url("credentials"), again))[
            "data"
        ]["token"]
        body_of(await client.request("GET", client.url("cdrs")))


async def test_token_b_is_sealed_with_the_registry_key(settings):
    keys = KeyRing.parse(generate_key())
    context = replace(ApiContext.bare(), keys=keys)
    async with (
        ocpi_api(settings, context=context) as (db, port),
        registered(db, port, "acme") as (_, _, platform),
    ):
        row = await db.fetchrow(
            "SELECT platform_id, token_b, token_b_sealed, sealed_with FROM ocpi_platforms"
        )
        assert row["token_b"] is None
        opened = keys.open(f"ocpi:{row['platform_id']}", row["token_b_sealed"], row["sealed_with"])
        assert opened == platform.token_b


async def test_two_registrations_at_once_give_one_token_c(settings):
    async with ocpi_api(settings) as (db, port):
        token_a = await new_platform(db, "acme")
        client = OcpiClient(port, token_a)
        await client.discover(f"http://127.0.0.1:{port}/ocpi/versions")
        replies: list[Any] = []
        async with serving_platform("token-b") as platform:
            offered = credentials("token-b", platform.versions_url)

            async def post() -> None:
                replies.append(await client.request("POST", client.url("credentials"), offered))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(post)
        statuses = sorted(reply.status for reply in replies)
        assert statuses[0] == 200 and statuses.count(200) == 1, statuses
        assert set(statuses[1:]) <= {401, 405}
        (winner,) = [reply for reply in replies if reply.status == 200]
        token_c = body_of(winner)["data"]["token"]
        tokens_kept = await db.fetch("SELECT token_sha256 FROM ocpi_platforms")
        assert [row[0] for row in tokens_kept] == [digest(token_c)]


async def test_a_registration_the_platform_cannot_serve_changes_nothing(settings):
    async with ocpi_api(settings) as (db, port):
        token_a = await new_platform(db, "acme")
        client = OcpiClient(port, token_a)
        await client.discover(f"http://127.0.0.1:{port}/ocpi/versions")
        url = client.url("credentials")
        async with serving_platform("token-b", versions=("2.1.1",)) as old_platform:
            offered = credentials("token-b", old_platform.versions_url)
            body_of(await client.request("POST", url, offered), 200, 3002)
        async with serving_platform("token-b") as platform:
            wrong_b = credentials("another-token", platform.versions_url)
            body_of(await client.request("POST", url, wrong_b), 200, 3001)
            nowhere = credentials("token-b", "http://127.0.0.1:1/ocpi/versions")
            body_of(await client.request("POST", url, nowhere), 200, 3001)
        assert await db.fetchval("SELECT status FROM ocpi_platforms") == "pending"
        # Token A still works: the registration never happened.
        body_of(await client.request("GET", url))


async def test_the_versions_url_must_be_public_unless_allowed(settings):
    async with serving_api(settings) as (db, port):  # [api.ocpi] allow_private = false
        token_a = await new_platform(db, "acme")
        client = OcpiClient(port, token_a)
        await client.discover(f"http://127.0.0.1:{port}/ocpi/versions")
        async with serving_platform("token-b") as platform:
            offered = credentials("token-b", platform.versions_url)
            body = body_of(
                await client.request("POST", client.url("credentials"), offered), 200, 3001
            )
            assert "refused" in body["status_message"]
            assert platform.requests == []


async def test_an_unsigned_cdr_is_stored_once_and_read_back(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        cdr = spec_cdr()
        reply = await client.push_cdr(cdr)
        body = body_of(reply, 201)
        assert "data" not in body
        location = reply.headers["location"]
        assert location == client.url("cdrs", "BE", "BEC", "12345")
        assert (
            reply.headers["ocpi-from-country-code"],
            reply.headers["ocpi-from-party-id"],
        ) == OURS
        assert (reply.headers["ocpi-to-country-code"], reply.headers["ocpi-to-party-id"]) == CPO
        got = body_of(await client.request("GET", location))["data"]
        assert got == cdr
        row = await db.fetchrow("SELECT body, outcome FROM ocpi_cdrs")
        assert json.loads(row["body"]) == cdr and row["outcome"] == "refused"  # not acme's charger
        # A replay changes nothing and is answered as the first push.
        before = await db.fetch("SELECT * FROM ocpi_cdrs")
        replay = await client.push_cdr(cdr)
        body_of(replay, 200)
        assert replay.headers["location"] == location
        # The same content in another JSON form is the same CDR.
        reordered = json.dumps(dict(reversed(list(cdr.items())))).encode()
        body_of(await client.push_cdr(None, raw=reordered), 200)
        assert await db.fetch("SELECT * FROM ocpi_cdrs") == before
        # The same id with other content is refused: CDRs are immutable.
        changed = spec_cdr(total_energy=16.0)
        body = body_of(await client.push_cdr(changed), 200, 2001)
        assert "credit CDR" in body["status_message"]
        assert await db.fetch("SELECT * FROM ocpi_cdrs") == before
        # Case does not make another CDR (CiStrings).
        body_of(
            await client.push_cdr(spec_cdr(id="12345", party_id="bec", total_energy=1)), 200, 2001
        )


async def test_cdrs_are_listed_with_pagination(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        for n in range(5):
            stamp = f"2015-06-29T22:0{n}:00Z"
            body_of(await client.push_cdr(spec_cdr(id=f"C{n}", last_updated=stamp)), 201)
        reply = await client.request("GET", client.url("cdrs") + "?limit=2")
        assert [c["id"] for c in body_of(reply)["data"]] == ["C0", "C1"]
        assert reply.headers["x-total-count"] == "5"
        assert reply.headers["x-limit"] == "100"
        nxt = reply.headers["link"]
        assert nxt == f'<{client.url("cdrs")}?offset=2&limit=2>; rel="next"'
        reply = await client.request("GET", nxt[1 : nxt.index(">")])
        assert [c["id"] for c in body_of(reply)["data"]] == ["C2", "C3"]
        query = "?date_from=2015-06-29T22:01:00Z&date_to=2015-06-29T22:04:00&limit=2&offset=2"
        reply = await client.request("GET", client.url("cdrs") + query)
        assert [c["id"] for c in body_of(reply)["data"]] == ["C3"]
        assert reply.headers["x-total-count"] == "3" and "link" not in reply.headers
        for bad in ("?limit=-1", "?offset=x", "?date_from=yesterday"):
            body_of(await client.request("GET", client.url("cdrs") + bad), 200, 2001)
        reply = await client.request("GET", client.url("cdrs") + "?limit=1000")
        assert len(body_of(reply)["data"]) == 5


async def test_another_partners_platform_cannot_reach_these_cdrs(settings):
    async with (
        ocpi_api(settings) as (db, port),
        registered(db, port, "acme") as (acme, _, _),
        registered(db, port, "other", ("CPO", "NL", "OTH")) as (other, _, _),
    ):
        location = (await acme.push_cdr(spec_cdr())).headers["location"]
        other.party = ("NL", "OTH")
        body_of(await other.request("GET", location), 404, 2000)
        assert body_of(await other.request("GET", other.url("cdrs")))["data"] == []
        # It cannot push as acme's CPO either: BE/BEC is no role of its.
        other.party = CPO
        body_of(await other.push_cdr(spec_cdr(id="X1")), 200, 2001)
        other.party = ("NL", "OTH")
        body_of(await other.push_cdr(spec_cdr(id="X1")), 200, 2001)
        # Its own CDR with acme's id is its own: no conflict, no overwrite.
        mine = spec_cdr(country_code="NL", party_id="OTH", total_energy=3)
        body_of(await other.push_cdr(mine), 201)
        assert body_of(await acme.request("GET", location))["data"] == spec_cdr()


async def test_tokens_that_are_no_platforms_are_refused(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        cdrs = client.url("cdrs")
        for header in (
            None,
            "Token",
            "Token not-a-known-token",
            "Bearer " + client.token,
            "Token " + "A" * 300,
            "Token " + base64.b64encode(b"\x00\xff").decode(),
        ):
            stranger = OcpiClient(port, None, endpoints=client.endpoints)
            extra = {} if header is None else {"authorization": header}
            body_of(await stranger.request("GET", cdrs, headers=extra), 401, 2000)
            body_of(await stranger.push_cdr(spec_cdr(), headers=extra), 401, 2000)
        # 2.1.1-style: the token itself, not base64, is understood as well.
        plain = {"authorization": f"Token {client.token}"}
        body_of(await client.request("GET", cdrs, headers=plain))
        # A revoked platform's token stops at once.
        admin = Admin(settings)
        assert (await admin("partners", "ocpi", "revoke", "acme"))[0] == 0
        body_of(await client.request("GET", cdrs), 401, 2000)


async def test_malformed_and_oversized_cdrs_are_refused_cleanly(settings):
    async with (
        ocpi_api(settings, max_body_bytes=64 * 1024) as (db, port),
        registered(db, port, "acme") as (client, _, _),
    ):
        cases: list[tuple[bytes, int, int]] = [
            (b"{not json", 400, 2000),
            (b"\xff\xfe", 400, 2000),
            (b"[" * 10_000 + b"]" * 10_000, 200, 2001),
            (b'{"tariffs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400, 2000),
            (b'"a string"', 200, 2001),
            (b"[]", 200, 2001),
            (
                json.dumps({k: v for k, v in spec_cdr().items() if k != "cdr_location"}).encode(),
                200,
                2001,
            ),
        ]
        broken: list[dict[str, Any]] = [
            spec_cdr(id=""),
            spec_cdr(id="x" * 37),
            spec_cdr(id="a\nb"),
            spec_cdr(total_energy=-1),
            spec_cdr(total_energy="lots"),
            spec_cdr(total_energy=1e300),
            spec_cdr(end_date_time="2015-06-29T20:00:00Z"),
            spec_cdr(start_date_time="yesterday"),
            spec_cdr(auth_method="MAGIC"),
            spec_cdr(charging_periods=[]),
            spec_cdr(credit=True),
            spec_cdr(country_code="BEL"),
            spec_cdr(cdr_token={"uid": "x"}),
            spec_cdr(signed_data={"encoding_method": "OCMF", "signed_values": []}),
        ]
        location = spec_cdr()
        location["cdr_location"]["evse_uid"] = "\u202e3256"
        broken.append(location)
        cases += [(json.dumps(cdr).encode(), 200, 2001) for cdr in broken]
        for raw, http_status, status in cases:
            reply = await client.push_cdr(None, raw=raw)
            body = body_of(reply, http_status, status)
            assert body["status_message"], raw[:80]
        # Over the partner API's body cap: refused before it is read (HTTP 413).
        too_big = json.dumps(spec_cdr(tariffs=["y" * 70_000])).encode()
        auth = {"authorization": token_header(client.token or "")}
        reply = await call(port, "POST", url_path(client.url("cdrs")), body=too_big, headers=auth)
        assert reply.status == 413
        assert await db.fetchval("SELECT count(*) FROM ocpi_cdrs") == 0
        # A NUL in a field nobody reads is kept as received, not a server error.
        odd = spec_cdr(id="NUL-1", remark2="\u0000")
        body_of(await client.push_cdr(odd), 201)
        got = body_of(await client.request("GET", client.url("cdrs", "BE", "BEC", "NUL-1")))
        assert got["data"]["remark2"] == "\u0000"


async def test_routing_headers_must_name_us_and_the_cdrs_owner(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        wrong_to = {"ocpi-to-country-code": "DE", "ocpi-to-party-id": "XXX"}
        body_of(await client.push_cdr(spec_cdr(), headers=wrong_to), 200, 2001)
        wrong_from = {"ocpi-from-country-code": "NL", "ocpi-from-party-id": "ABC"}
        body_of(await client.push_cdr(spec_cdr(), headers=wrong_from), 200, 2001)
        body_of(await client.push_cdr(spec_cdr(), routed=False), 201)


async def test_the_spec_example_posted_to_a_trailing_slash_is_accepted(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        body_of(await client.request("POST", client.url("cdrs") + "/", spec_cdr()), 201)
        for method in ("PUT", "PATCH", "DELETE"):
            reply = await client.request(method, client.url("cdrs"), spec_cdr())
            body_of(reply, 405, 2000)
            assert reply.headers["allow"] == "GET, HEAD, POST"
        body_of(await client.request("GET", url_path(client.url("cdrs")) + "/nope"), 404, 2000)
        body_of(await client.request("GET", "/ocpi/nothing-here"), 404, 2000)


async def test_live_sessions_are_kept_as_pushed(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        session = spec_session_finished()
        url = client.url("sessions", "BE", "BEC", "101")
        body_of(await client.request("PUT", url, session), 201)
        body_of(await client.request("PUT", url, session), 200)
        patch = {
            "kwh": 42.5,
            "charging_periods": [
                {
                    "start_date_time": "2015-06-29T23:50:00Z",
                    "dimensions": [{"type": "ENERGY", "volume": 1}],
                }
            ],
            "last_updated": "2015-06-29T23:55:00Z",
        }
        body_of(await client.request("PATCH", url, patch))
        got = body_of(await client.request("GET", url))["data"]
        assert got["kwh"] == 42.5 and len(got["charging_periods"]) == 4
        assert got["last_updated"] == "2015-06-29T23:55:00Z"
        # What the spec refuses: a PATCH without last_updated, ids that differ from the URL,
        # a session never PUT, another party's URL.
        body_of(await client.request("PATCH", url, {"kwh": 1}), 200, 2001)
        body_of(await client.request("PATCH", url, patch | {"id": "102"}), 200, 2001)
        body_of(
            await client.request("PUT", client.url("sessions", "BE", "BEC", "102"), session),
            200,
            2001,
        )
        body_of(
            await client.request("PATCH", client.url("sessions", "BE", "BEC", "999"), patch),
            404,
            2000,
        )
        body_of(
            await client.request("PUT", client.url("sessions", "NL", "XXX", "101"), session),
            404,
            2000,
        )
        body_of(await client.request("PUT", url, {"id": "101"}), 200, 2001)
        # Live sessions have no effect on ERE.
        assert await db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_the_cli_creates_lists_and_revokes_a_platform(settings):
    admin = Admin(settings)
    admin.config = Config(database=settings, api=ApiSettings(public_url="https://api.example.nl/"))
    await admin.ok(*partner_args("acme"))
    code, out, err = await admin("partners", "ocpi", "create", "acme")
    assert code == 0 and "shown only this once" in err
    lines = dict(line.split(":", 1) for line in out.strip().splitlines())
    assert lines["versions URL"].strip() == "https://api.example.nl/ocpi/versions"
    token_a = lines["token A"].strip()
    (listed,) = await admin.json("partners", "ocpi", "list", "acme")
    assert listed["status"] == "pending" and listed["cdrs"] == 0
    assert token_a not in json.dumps(listed, default=str)
    code, _, err = await admin("partners", "ocpi", "create", "acme")
    assert code == 2 and "revoke it first" in err
    assert (await admin("partners", "ocpi", "revoke", "acme"))[0] == 0
    code, _, err = await admin("partners", "ocpi", "revoke", "acme")
    assert code == 2 and err.startswith("ere-proxy: ")
    assert (await admin("partners", "ocpi", "create", "acme"))[0] == 0
    for argv in (("create", "nobody"), ("list", "nobody"), ("list", "bad id!")):
        code, _, err = await admin("partners", "ocpi", *argv)
        assert code == 2 and err.startswith("ere-proxy: "), (argv, err)


async def session_of(db: Database, cdr_id: str) -> dict[str, Any]:
    """The session a CDR became, with what the CDR row says of it."""
    row = await db.fetchrow(
        "SELECT c.outcome, c.note, s.* FROM ocpi_cdrs c LEFT JOIN sessions s USING (session_id) "
        "WHERE c.cdr_id = $1",
        cdr_id,
    )
    return dict(row)


async def test_a_signed_cdr_becomes_a_signed_verified_session(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        await grant_chargers(db, "acme", ["TC_00010"])
        body_of(await client.push_cdr(signed_cdr()), 201)
        session = await session_of(db, "TWIN-2")
        assert (session["outcome"], session["meter_class"]) == ("inserted", "signed-verified")
        assert (session["source"], session["source_ref"]) == ("ocpi", "BE/BEC/TWIN-2")
        assert (session["identity"], session["source_partner_id"]) == ("TC_00010", "acme")
        assert session["energy_source"] == "signed" and session["energy_wh"] == 1304
        assert session["status"] == "completed" and session["duplicate_of"] is None
        evidence = await db.fetchval(
            "SELECT evidence FROM session_source_records WHERE session_id = $1",
            session["session_id"],
        )
        assert "verifies" in evidence
        # A replay changes nothing: no second session, the same answer.
        sessions = await db.fetch("SELECT * FROM sessions ORDER BY session_id")
        replay = await client.push_cdr(signed_cdr())
        body_of(replay, 200)
        assert replay.headers["location"] == client.url("cdrs", "BE", "BEC", "TWIN-2")
        assert await db.fetch("SELECT * FROM sessions ORDER BY session_id") == sessions


@pytest.mark.parametrize(
    ("cdr", "meter_class"),
    [
        (keba_cdr(), "signed-verified"),
        (keba_cdr(tampered=True), "signed-unverified"),
        (signed_cdr(with_key=False), "signed-unverified"),
    ],
    ids=["keba", "keba-tampered", "no-key"],
)
async def test_signed_cdrs_are_weighed_by_the_evidence_code(settings, cdr, meter_class):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        await grant_chargers(db, "acme", [cdr["cdr_location"]["evse_uid"]])
        body_of(await client.push_cdr(cdr), 201)
        assert (await session_of(db, cdr["id"]))["meter_class"] == meter_class


async def test_an_unsigned_cdr_becomes_a_session_of_the_partners_charger_only(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        # Not (yet) one of acme's chargers: the CDR is kept, no session is made.
        body_of(await client.push_cdr(spec_cdr(id="before")), 201)
        before = await session_of(db, "before")
        assert (before["outcome"], before["session_id"]) == ("refused", None)
        assert "cdr_location.evse_uid" in before["note"]
        await grant_chargers(db, "acme", ["3256"])
        body_of(await client.push_cdr(spec_cdr()), 201)
        session = await session_of(db, "12345")
        assert (session["outcome"], session["meter_class"]) == ("inserted", "unknown")
        assert session["energy_wh"] == Decimal("15342.000")
        assert session["energy_source"] == "reported"
        assert session["started_at"] == datetime(2015, 6, 29, 21, 39, 9, tzinfo=UTC)
        # A CDR that breaks a session rule is kept with the rule it broke.
        instant = spec_cdr(id="instant", end_date_time="2015-06-29T21:39:09Z")
        body_of(await client.push_cdr(instant), 201)
        refused = await session_of(db, "instant")
        assert refused["outcome"] == "invalid" and "end_date_time" in refused["note"]
        # Neither a credit CDR nor a reservation without charging is a session.
        credit = spec_cdr(id="12345-C", credit=True, credit_reference_id="12345")
        body_of(await client.push_cdr(credit), 201)
        reservation = spec_cdr(id="R1")
        reservation["cdr_location"]["evse_uid"] = "#NA"
        body_of(await client.push_cdr(reservation), 201)
        assert await db.fetchval("SELECT count(*) FROM sessions") == 1
        credited = await db.fetchval(
            "SELECT o.cdr_id FROM ocpi_cdrs c JOIN ocpi_cdrs o ON o.cdr_ref = c.credit_of "
            "WHERE c.cdr_id = '12345-C'"
        )
        assert credited == "12345"


async def test_odd_urls_and_bodies_are_client_errors(settings):
    async with ocpi_api(settings) as (db, port), registered(db, port, "acme") as (client, _, _):
        cdrs = url_path(client.url("cdrs"))
        for path in (f"{cdrs}/BE/BEC/%00", f"{cdrs}/BE/BEC/{'x' * 40}", f"{cdrs}/BE/BEC/a%2Fb"):
            body_of(await client.request("GET", path), 404, 2000)
        sessions = url_path(client.url("sessions"))
        body = spec_session_finished()
        for path, http_status in (
            (f"{sessions}/BE/BEC/%00", 200),
            (f"{sessions}/BE/BEC/{'y' * 37}", 200),
            (f"{sessions}/%00/BEC/101", 404),
        ):
            body_of(await client.request("PUT", path, body), http_status, None)
        body_of(await client.request("PUT", f"{sessions}/BE/BEC/101", body), 201)
        body_of(await client.request("PATCH", f"{sessions}/BE/BEC/101", raw=b"{"), 400, 2000)
        body_of(await client.request("GET", cdrs + "?date_from=%00"), 200, 2001)
        # An id with characters a URL must escape is read back at its Location.
        odd = spec_cdr(id="a/b?c#d%e")
        location = (await client.push_cdr(odd)).headers["location"]
        assert location.endswith("/cdrs/BE/BEC/a%2Fb%3Fc%23d%25e")
        assert body_of(await client.request("GET", location))["data"]["id"] == "a/b?c#d%e"


async def test_guessing_tokens_is_rate_limited(settings):
    async with ocpi_api(settings, failed_auth_burst=2, failed_auth_per_second=0.001) as (db, port):
        await new_platform(db, "acme")
        guesser = OcpiClient(port, "guess")
        versions = f"http://127.0.0.1:{port}/ocpi/versions"
        for _ in range(2):
            body_of(await guesser.request("GET", versions), 401, 2000)
        reply = await guesser.request("GET", versions)
        body_of(reply, 429, 2000)
        assert int(reply.headers["retry-after"]) >= 1
