"""The partner API's MID scans over real HTTP, on traffic stored as the proxy captures it: a
charger whose signed OCMF readings verify, one whose boot declares a MID meter, one with a meter
off the list, one not yet connected and one nobody knows; estimates computed by hand; the report
read back; idempotency; another partner's charger scanned like one nobody has seen; another
partner's report 404; scopes and hostile input."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from proxy.api.context import ApiContext
from proxy.api.keys import SCOPES
from proxy.capture.sessions import store_events
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.runtime.config import ApiSettings, CannotStart, Config
from testkit.ere_admin import EAN_1, EAN_2, EAN_3
from testkit.partner_api import call, enrolment, idem, partner_with_key, problem_of, serving_api
from testkit.signed_sessions import (
    boot_16,
    boot_201,
    meter_key,
    plain_session_16,
    signed_session_201,
)

CONTEXT = dataclasses.replace(ApiContext.bare(), scan_price_per_kwh=Decimal("0.12"))
UPSTREAM = "wss://csms.example.com/ocpp"
HOUR = timedelta(hours=1)
DECLARED_ONLY = {
    "vendor": "Alfen",
    "model": "Eve Single Pro-line",
    "meter_type": "Carlo Gavazzi EM340-DIN.AV2.3.X.S1.PF",
    "meter_serial": "G-77",
    "firmware": "6.2",
    "declared_kwh_per_year": 2500,
}


def anonymous(item: dict, identity: str) -> dict:
    """A report item without its position, its identity written X."""
    return {
        k: v
        for k, v in json.loads(json.dumps(item).replace(identity, "X")).items()
        if k != "position"
    }


async def post(port, key, path, body, headers=None):
    reply = await call(port, "POST", path, key=key, json_body=body, headers=headers or idem())
    assert reply.status == 201, (path, reply.body)
    return reply.json()


async def charger_of(port, key, identity, ean, linked_since):
    """`identity` registered by `key`'s partner and linked since `linked_since` to a new
    customer of its (on `ean`)."""
    customer = await post(port, key, "/v1/customers", enrolment(ean))
    await post(port, key, "/v1/chargers", {"identity": identity, "upstream": UPSTREAM})
    link = {
        "customer_id": customer["id"],
        "max_power_w": 11000,
        "valid_from": linked_since.isoformat(timespec="seconds"),
    }
    await post(port, key, f"/v1/chargers/{identity}/links", link)


async def store(db, *batches) -> None:
    async with db.transaction() as conn:
        for events in batches:
            await store_events(conn, events)


async def portfolio(db, port, now):
    """acme's chargers and their traffic (keys of acme and rival, every scope).

    CP-SIGNED, linked for 400 days, first seen 200 days ago: two sessions signed with its
    meter's key, 42.370 + 57.630 = 100 kWh. CP-DECLARED, linked and seen for over a year: its
    boot names an Iskra WM3M4 with a serial; 10 kWh 100 days ago, 10 kWh 300 days ago, and
    10 kWh 380 days ago (before the window). CP-PLAIN, registered just now: its boot names an
    Eastron SDM630 (not the MID spelling). CP-RIVAL is rival's: signed sessions and a MID
    meter, a customer of rival's linked."""
    acme = await partner_with_key(db, "acme", SCOPES)
    rival = await partner_with_key(db, "rival", SCOPES)
    await charger_of(port, acme, "CP-SIGNED", EAN_1, now - timedelta(days=400))
    await charger_of(port, acme, "CP-DECLARED", EAN_2, now - timedelta(days=400))
    await post(port, acme, "/v1/chargers", {"identity": "CP-PLAIN", "upstream": UPSTREAM})
    await charger_of(port, rival, "CP-RIVAL", EAN_3, now - timedelta(days=400))
    key = meter_key()
    first_seen = now - timedelta(days=200, hours=1)
    day = timedelta(days=1)
    await store(
        db,
        boot_201("CP-SIGNED", first_seen),
        signed_session_201(
            "CP-SIGNED",
            "s-1",
            key,
            ((now - 150 * day, "1000.000"), (now - 150 * day + timedelta(hours=3), "1042.370")),
        ),
        signed_session_201(
            "CP-SIGNED",
            "s-2",
            key,
            ((now - 20 * day, "1042.370"), (now - 20 * day + timedelta(hours=5), "1100.000")),
        ),
        boot_16("CP-DECLARED", "Iskra WM3M4", "IS-123", now - 400 * day),
        plain_session_16("CP-DECLARED", 1, now - 380 * day, now - 380 * day + 2 * HOUR, 10_000),
        plain_session_16("CP-DECLARED", 2, now - 300 * day, now - 300 * day + 2 * HOUR, 10_000),
        plain_session_16("CP-DECLARED", 3, now - 100 * day, now - 100 * day + 2 * HOUR, 10_000),
        boot_16("CP-PLAIN", "Eastron SDM630", "E-1", now),
        boot_16("CP-RIVAL", "Iskra WM3M4", "IS-RIVAL-9", now - 300 * day),
        signed_session_201(
            "CP-RIVAL",
            "r-1",
            meter_key(),
            ((now - 50 * day, "7.000"), (now - 50 * day + HOUR, "77.000")),
        ),
    )
    return acme, rival


async def test_a_portfolio_scan_with_verdicts_reasons_and_estimates(settings):
    async with serving_api(settings, context=CONTEXT) as (db, port):
        now = datetime.now(DUTCH_TIME)
        acme, _ = await portfolio(db, port, now)
        classes = dict(await db.fetch("SELECT transaction_id, meter_class FROM sessions"))
        assert classes["s-1"] == classes["s-2"] == "signed-verified"
        assert classes["2"] == "declared"
        body = {
            "chargers": [
                {"identity": "CP-SIGNED"},
                {"identity": "CP-DECLARED"},
                {"identity": "CP-PLAIN", "declared_kwh_per_year": 1500},
                DECLARED_ONLY,
                {"identity": "CP-NOBODY"},
            ]
        }
        reply = await call(port, "POST", "/v1/scans", key=acme, json_body=body, headers=idem())
        assert reply.status == 201, reply.body
        report = reply.json()
        assert reply.headers["location"] == f"/v1/scans/{report['id']}"
        assert report["price_per_kwh"] == "0.12"
        signed, declared, plain, not_connected, nobody = report["items"]
        assert [item["position"] for item in report["items"]] == [0, 1, 2, 3, 4]

        # Verified signed sessions: 100 kWh over 200 days → × 365 / 200 = 182.500 kWh a year;
        # × €0.12 = €21.90.
        assert (signed["verdict"], signed["reason_code"], signed["seen"]) == (
            "qualifies",
            "signed-verified",
            True,
        )
        assert "verified" in signed["reason"] and "2 session(s)" in signed["reason"]
        assert (signed["kwh_basis"], signed["observed_kwh"], signed["observed_days"]) == (
            "observed-annualised",
            "100.000",
            200,
        )
        assert (signed["kwh_per_year"], signed["eur_per_year"]) == ("182.500", "21.90")
        assert signed["input"] == {
            "identity": "CP-SIGNED",
            "vendor": None,
            "model": None,
            "meter_type": None,
            "meter_serial": None,
            "firmware": None,
            "declared_kwh_per_year": None,
        }

        # A MID meter the charger declares at boot: a check; a whole year seen, 20 kWh (the
        # session 380 days ago is outside) → €2.40.
        assert (declared["verdict"], declared["reason_code"]) == (
            "needs_check",
            "charger-declared-mid-meter",
        )
        assert "'Iskra WM3M4'" in declared["reason"] and "'IS-123'" in declared["reason"]
        assert "not yet verified" in declared["reason"]
        assert (declared["kwh_basis"], declared["observed_kwh"], declared["observed_days"]) == (
            "observed",
            "20.000",
            365,
        )
        assert (declared["kwh_per_year"], declared["eur_per_year"]) == ("20.000", "2.40")

        # A meter off the MID list, seen for less than 30 days: the declared 1500 kWh → €180.
        assert (plain["verdict"], plain["reason_code"], plain["seen"]) == (
            "does_not_qualify",
            "meter-not-listed",
            True,
        )
        assert "'Eastron SDM630'" in plain["reason"] and "signed OCMF" in plain["reason"]
        assert (plain["kwh_basis"], plain["observed_days"]) == ("declared", 0)
        assert (plain["kwh_per_year"], plain["eur_per_year"]) == ("1500.000", "180.00")

        # Not yet connected, a listed meter declared: a check; 2500 kWh × €0.12 = €300.
        assert (not_connected["verdict"], not_connected["reason_code"]) == (
            "needs_check",
            "partner-declared-mid-meter",
        )
        assert not_connected["seen"] is False and not_connected["observed_kwh"] is None
        assert not_connected["input"] == DECLARED_ONLY | {"identity": None}
        assert (not_connected["kwh_per_year"], not_connected["eur_per_year"]) == (
            "2500.000",
            "300.00",
        )

        assert (nobody["verdict"], nobody["reason_code"], nobody["kwh_basis"]) == (
            "does_not_qualify",
            "not-seen",
            "none",
        )
        assert (nobody["kwh_per_year"], nobody["eur_per_year"]) == ("0.000", "0.00")

        assert report["totals"] == {
            "chargers": 5,
            "qualifies": {"chargers": 1, "kwh_per_year": "182.500", "eur_per_year": "21.90"},
            "needs_check": {"chargers": 2, "kwh_per_year": "2520.000", "eur_per_year": "302.40"},
            "does_not_qualify": {
                "chargers": 2,
                "kwh_per_year": "1500.000",
                "eur_per_year": "180.00",
            },
        }

        # Kept: read back it is the answer the POST gave, and listed with its totals.
        again = await call(port, "GET", f"/v1/scans/{report['id']}", key=acme)
        assert again.status == 200 and again.json() == report
        listed = await call(port, "GET", "/v1/scans", key=acme)
        assert listed.status == 200
        summary = {k: v for k, v in report.items() if k != "items"}
        assert listed.json() == {"data": [summary], "next_cursor": None}
        audit = await db.fetch(
            "SELECT object_id, after FROM api_audit_log WHERE action = 'scan.run'"
        )
        assert [(row["object_id"], json.loads(row["after"])) for row in audit] == [
            (report["id"], summary)
        ]
        # Reports are never changed.
        for table in ("mid_scans", "mid_scan_items"):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="as it was given"):
                await db.execute(f"UPDATE {table} SET scan_id = scan_id")


async def test_another_partners_charger_is_scanned_like_one_nobody_has_seen(settings):
    async with serving_api(settings, context=CONTEXT) as (db, port):
        now = datetime.now(DUTCH_TIME)
        acme, rival = await portfolio(db, port, now)
        shapes = [
            {},
            {"meter_type": "Eastron SDM630", "declared_kwh_per_year": 1000},
            {"meter_type": "Iskra WM3M4", "meter_serial": "X-1"},
        ]
        body = {
            "chargers": [
                {"identity": name} | shape for shape in shapes for name in ("CP-RIVAL", "CP-NONE")
            ]
        }
        report = await post(port, acme, "/v1/scans", body)
        text = json.dumps(report)
        for secret in ("IS-RIVAL-9", "77.000", "70.000", "rival"):
            assert secret not in text
        items = report["items"]
        for theirs, nobodys in zip(items[::2], items[1::2]):
            assert theirs["seen"] is False and theirs["observed_kwh"] is None
            assert anonymous(theirs, "CP-RIVAL") == anonymous(nobodys, "CP-NONE")
        # Rival's own scan sees its charger: verified signed readings.
        (own,) = (await post(port, rival, "/v1/scans", {"chargers": [{"identity": "CP-RIVAL"}]}))[
            "items"
        ]
        assert (own["verdict"], own["seen"], own["observed_kwh"]) == ("qualifies", True, "70.000")


async def test_idempotency_isolation_paging_and_scopes(settings):
    async with serving_api(settings, context=CONTEXT) as (db, port):
        acme = await partner_with_key(db, "acme", SCOPES)
        rival = await partner_with_key(db, "rival", SCOPES)
        body = {"chargers": [DECLARED_ONLY]}
        headers = idem()
        first = await call(port, "POST", "/v1/scans", key=acme, json_body=body, headers=headers)
        second = await call(port, "POST", "/v1/scans", key=acme, json_body=body, headers=headers)
        assert first.status == second.status == 201
        assert first.json() == second.json()
        assert await db.fetchval("SELECT count(*) FROM mid_scans") == 1
        other = {"chargers": [DECLARED_ONLY | {"declared_kwh_per_year": 1}]}
        problem_of(
            await call(port, "POST", "/v1/scans", key=acme, json_body=other, headers=headers), 409
        )
        scan_id = first.json()["id"]

        # Another partner's report does not exist for them, nor in their list.
        problem_of(await call(port, "GET", f"/v1/scans/{scan_id}", key=rival), 404)
        assert (await call(port, "GET", "/v1/scans", key=rival)).json()["data"] == []
        for path in ("/v1/scans/nope", "/v1/scans/scn_" + "a" * 20, "/v1/scans/" + "x" * 64):
            problem_of(await call(port, "GET", path, key=acme), 404)

        # Pages, newest first.
        for _ in range(2):
            await post(port, acme, "/v1/scans", body)
        ids = [
            row["scan_id"]
            for row in await db.fetch(
                "SELECT scan_id FROM mid_scans ORDER BY created_at DESC, scan_id DESC"
            )
        ]
        page = (await call(port, "GET", "/v1/scans?limit=2", key=acme)).json()
        rest = (
            await call(port, "GET", f"/v1/scans?limit=2&cursor={page['next_cursor']}", key=acme)
        ).json()
        assert [s["id"] for s in page["data"] + rest["data"]] == ids and rest["next_cursor"] is None
        for query in ("cursor=garbage", "limit=0", "limit=101", "cursor=" + "A" * 600):
            problem_of(await call(port, "GET", f"/v1/scans?{query}", key=acme), 400, 422)

        # Scopes: scan:write runs one, scan:read reads them; no key or a bad one is 401.
        reader = await partner_with_key(db, "reader", ("scan:read",))
        writer = await partner_with_key(db, "writer", ("scan:write",))
        blind = await partner_with_key(
            db, "blind", tuple(s for s in SCOPES if not s.startswith("scan"))
        )
        assert (
            "scan:write"
            in problem_of(
                await call(port, "POST", "/v1/scans", key=reader, json_body=body, headers=idem()),
                403,
            )["detail"]
        )
        assert (
            await call(port, "POST", "/v1/scans", key=writer, json_body=body, headers=idem())
        ).status == 201
        for path in ("/v1/scans", f"/v1/scans/{scan_id}"):
            assert (
                "scan:read" in problem_of(await call(port, "GET", path, key=writer), 403)["detail"]
            )
            problem_of(await call(port, "GET", path, key=blind), 403)
            problem_of(await call(port, "GET", path), 401)
            problem_of(await call(port, "GET", path, key="ere_nope"), 401)
        problem_of(await call(port, "POST", "/v1/scans", json_body=body, headers=idem()), 401)
        problem_of(await call(port, "POST", "/v1/scans", key=acme, json_body=body), 400)


async def test_hostile_portfolios_are_refused_never_a_server_error(settings):
    async with serving_api(settings, context=CONTEXT, max_body_bytes=1 << 20) as (db, port):
        acme = await partner_with_key(db, "acme", SCOPES)
        long = "x" * 1001
        bodies = [
            {},
            {"chargers": []},
            {"chargers": {"identity": "CP-1"}},
            {"chargers": [{"identity": "CP-1"}] * 10_001},
            {"chargers": [{"identity": long}]},
            {"chargers": [{"identity": "x" * 49}]},
            {"chargers": [{"identity": "CP:1"}]},
            {"chargers": [{"identity": "CP-\u0000"}]},
            {"chargers": [{"meter_type": "SDM630\u0000MID"}]},
            {"chargers": [{"meter_type": "M" * 101}]},
            {"chargers": [{"vendor": long}]},
            {"chargers": [{"firmware": "6.1\u202e"}]},
            {"chargers": [{"meter_serial": "\ud800"}]},
            {"chargers": [{"declared_kwh_per_year": -1}]},
            {"chargers": [{"declared_kwh_per_year": 1_000_001}]},
            {"chargers": [{"declared_kwh_per_year": 2500.5}]},
            {"chargers": [{"declared_kwh_per_year": "2500"}]},
            {"chargers": [{"declared_kwh_per_year": True}]},
            {"chargers": [{"meter_type": 42}]},
            {"chargers": [{"identity": "CP-1", "price": "0.50"}]},
            {"chargers": [None]},
        ]
        for body in bodies:
            reply = await call(port, "POST", "/v1/scans", key=acme, json_body=body, headers=idem())
            assert problem_of(reply, 422)["errors"], body
        named = await call(
            port,
            "POST",
            "/v1/scans",
            key=acme,
            json_body={"chargers": [{}, {"meter_type": "M" * 101}]},
            headers=idem(),
        )
        assert problem_of(named, 422)["errors"][0]["field"] == "chargers.1.meter_type"
        for raw in (b"{", b"\x00", b'{"chargers": [' + b"{}," * 5 + b"]}"):
            reply = await call(
                port,
                "POST",
                "/v1/scans",
                key=acme,
                body=raw,
                headers=idem() | {"content-type": "application/json"},
            )
            problem_of(reply, 400, 422)
        assert await db.fetchval("SELECT count(*) FROM mid_scans") == 0
        # The largest portfolio allowed is scanned.
        largest = {"chargers": [{"identity": f"CP-{n}"} for n in range(10_000)]}
        report = await post(port, acme, "/v1/scans", largest)
        assert report["totals"]["does_not_qualify"]["chargers"] == 10_000

    # Under the default body cap a large portfolio is 413, still a problem, never a 5xx.
    async with serving_api(settings, context=CONTEXT) as (db, port):
        acme = await partner_with_key(db, "acme2", SCOPES)
        reply = await call(port, "POST", "/v1/scans", key=acme, json_body=largest, headers=idem())
        problem_of(reply, 413)


async def test_the_operator_sets_the_price_and_extends_the_mid_list(settings, tmp_path):
    extended = tmp_path / "mid_meters.toml"
    extended.write_text(
        '[[meter]]\nvendor = "Acme Metering"\nmodels = ["AMX-7*"]\nconfidence = "high"\n'
        'source = "type-examination certificate checked by the operator"\n'
    )
    config = Config(
        api=ApiSettings(scan_price_per_kwh="0.0875", scan_mid_meters_file=str(extended))
    )
    context = ApiContext.from_config(config)
    assert context.scan_price_per_kwh == Decimal("0.0875")
    async with serving_api(settings, context=context) as (db, port):
        acme = await partner_with_key(db, "acme", SCOPES)
        body = {
            "chargers": [
                {"meter_type": "AMX-7 MID", "declared_kwh_per_year": 3000},
                {"meter_type": "Iskra WM3M4", "declared_kwh_per_year": 3000},
            ]
        }
        added, shipped = (await post(port, acme, "/v1/scans", body))["items"]
    # 3000 kWh × €0.0875 = €262.50; the shipped list is replaced, not merged.
    assert (added["verdict"], added["reason_code"], added["eur_per_year"]) == (
        "needs_check",
        "partner-declared-mid-meter",
        "262.50",
    )
    assert "Acme Metering" in added["reason"]
    assert (shipped["verdict"], shipped["reason_code"]) == ("does_not_qualify", "meter-not-listed")

    extended.write_text("[[meter]]\nvendor = 'Acme'\n")
    with pytest.raises(CannotStart, match="mid_meters.toml"):
        ApiContext.from_config(config)
    with pytest.raises(ValueError, match="scan_price_per_kwh"):
        ApiSettings(scan_price_per_kwh="0.1e-9")
