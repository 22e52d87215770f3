"""Changing customers over real HTTP: details under `If-Match`, ending (mandates revoked from a
day, later sessions no longer counted at the close), next year's mandate, ETags and 304s on
customers and chargers, another partner's customer untouchable, hostile bodies and headers."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
import trio

from proxy.api.key_store import create_key
from proxy.api.keys import SCOPES, parse_key
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.store import open_database
from testkit.ere_admin import EAN_1, EAN_2, EAN_3
from testkit.ere_books import Q2, Q3, add_session, close, config, seed
from testkit.partner_api import call, enrolment, idem, partner_with_key, problem_of, serving_api

IBAN = "NL20INGB0001234567"


async def enrol(port, key, ean, **fields) -> dict:
    body = enrolment(ean, **fields)
    reply = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=idem())
    assert reply.status == 201, reply.body
    return reply.json()


async def read(port, key, path, **headers):
    return await call(port, "GET", path, key=key, headers=headers)


async def patch(port, key, path, body, **headers):
    return await call(port, "PATCH", path, key=key, json_body=body, headers=headers)


async def end(port, key, customer_id, body, headers=None):
    path = f"/v1/customers/{customer_id}/end"
    return await call(port, "POST", path, key=key, json_body=body, headers=headers or idem())


def today() -> date:
    return datetime.now(DUTCH_TIME).date()


async def test_a_change_needs_the_current_etag_and_is_audited(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES, payout_model="direct")
        customer = await enrol(port, key, EAN_1, iban=IBAN)
        path = f"/v1/customers/{customer['id']}"
        got = await read(port, key, path)
        first = got.headers["etag"]
        assert first.startswith('"') and first.endswith('"') and got.json() == customer
        assert (await read(port, key, path)).headers["etag"] == first  # a function of the answer

        for has in (first, f"W/{first}", "*", f'"other", {first}'):
            unchanged = await read(port, key, path, **{"if-none-match": has})
            assert (unchanged.status, unchanged.body) == (304, b""), has
            assert unchanged.headers["etag"] == first
        assert (await read(port, key, path, **{"if-none-match": '"other"'})).status == 200

        missing = await patch(port, key, path, {"name": "Jan de Vries"})
        assert problem_of(missing, 428)["errors"][0]["field"] == "If-Match"
        change = {
            "name": "Jan de Vries",
            "email": "Jan@Example.NL",
            "postcode": "3511ed",
            "iban": "NL44 RABO 0123 4567 89",
        }
        changed = await patch(port, key, path, change, **{"if-match": first})
        assert changed.status == 200, changed.body
        after = changed.json()
        assert (after["name"], after["email"], after["postcode"], after["iban"]) == (
            "Jan de Vries",
            "Jan@example.nl",
            "3511 ED",
            "NL44RABO0123456789",
        )
        assert (after["ean"], after["address"], after["mandates"]) == (
            EAN_1,
            customer["address"],
            customer["mandates"],
        )
        second = changed.headers["etag"]
        assert second != first
        again = await read(port, key, path, **{"if-none-match": first})
        assert again.status == 200 and again.json() == after and again.headers["etag"] == second

        # Whoever read the customer before the change cannot overwrite it.
        stale = await patch(port, key, path, {"name": "Someone Else"}, **{"if-match": first})
        problem_of(stale, 412)
        for weak_or_odd in (f"W/{second}", "garbage", second.strip('"'), '"' + "a" * 4000 + '"'):
            problem_of(
                await patch(port, key, path, {"city": "Ede"}, **{"if-match": weak_or_odd}), 412
            )
        assert (await read(port, key, path)).json()["name"] == "Jan de Vries"

        key_id = parse_key(key)[0]
        audits = await db.fetch(
            "SELECT key_id, action, object_id, before::text AS before, after::text AS after "
            "FROM api_audit_log WHERE action = 'customer.update'"
        )
        assert len(audits) == 1
        (audit,) = audits
        assert (audit["key_id"], audit["object_id"]) == (key_id, customer["id"])
        assert json.loads(audit["before"]) == customer
        assert json.loads(audit["after"]) == after
        history = await db.fetchrow(
            "SELECT channel, actor, before::text AS before, after::text AS after FROM customer_changes"
        )
        assert (history["channel"], history["actor"]) == ("api", key_id)
        assert json.loads(history["before"]) == {
            "email": "j.jansen@example.nl",
            "iban": IBAN,
            "name": "J. Jansen",
            "postcode": "1234 AB",
        }
        assert json.loads(history["after"])["iban"] == "NL44RABO0123456789"

        # The same values again change nothing: same tag, nothing audited.
        same = await patch(port, key, path, change, **{"if-match": f'"x", {second}'})
        assert same.status == 200 and same.headers["etag"] == second
        assert await db.fetchval("SELECT count(*) FROM customer_changes") == 1
        assert await db.fetchval("SELECT count(*) FROM api_audit_log") == 2  # enrol, update


async def test_of_two_changes_from_one_read_exactly_one_is_made(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        customer = await enrol(port, key, EAN_1)
        path = f"/v1/customers/{customer['id']}"
        tag = (await read(port, key, path)).headers["etag"]
        replies = {}

        async def change(city: str) -> None:
            replies[city] = await patch(port, key, path, {"city": city}, **{"if-match": tag})

        async with trio.open_nursery() as nursery:
            for city in ("Ede", "Epe"):
                nursery.start_soon(change, city)
        assert sorted(reply.status for reply in replies.values()) == [200, 412]
        (made,) = [city for city, reply in replies.items() if reply.status == 200]
        assert (await read(port, key, path)).json()["city"] == made
        assert await db.fetchval("SELECT count(*) FROM customer_changes") == 1


async def test_the_ean_never_changes_and_bad_values_change_nothing(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES, payout_model="direct")
        customer = await enrol(port, key, EAN_1, iban=IBAN)
        path = f"/v1/customers/{customer['id']}"
        tag = (await read(port, key, path)).headers["etag"]

        ean = await patch(port, key, path, {"ean": EAN_2}, **{"if-match": tag})
        problem = problem_of(ean, 422)
        assert problem["errors"][0]["field"] == "ean"
        assert "new enrolment" in problem["errors"][0]["detail"]
        for body, field in (
            ({"iban": "NL00INGB0001234567"}, "iban"),
            ({"iban": "US12345678901234567890"}, "iban"),
            ({"iban": None}, "iban"),  # a direct partner's customer is paid to their account
            ({"postcode": "0123 AB"}, "postcode"),
            ({"email": "not an address"}, "email"),
            ({"email": None}, "email"),
            ({"name": None}, "name"),
            ({"name": "   "}, "name"),
            ({"name": "x" * 300}, "name"),
            ({"name": "x" * 5000}, "name"),
            ({"name": "Jan\x00Jansen"}, "name"),
            ({"city": "Utrecht\u202e"}, "city"),
            ({"address": "Dorpsstraat\x1b[2J 1"}, "address"),
            ({"name": 42}, "name"),
            ({"name": ["J."]}, "name"),
            ({"iban": {"$ne": None}}, "iban"),
            ({"partner": "bravo"}, "partner"),
            ({"grid_operator": "Enexis"}, "grid_operator"),
            ({"id": "cus_other"}, "id"),
        ):
            reply = await patch(port, key, path, body, **{"if-match": tag})
            assert problem_of(reply, 422)["errors"][0]["field"] == field, (body, reply.body)
        for raw in (b"[]", b'"name"', b"null"):
            reply = await call(
                port,
                "PATCH",
                path,
                key=key,
                body=raw,
                headers={"content-type": "application/json", "if-match": tag},
            )
            problem_of(reply, 422)
        problem_of(
            await call(
                port,
                "PATCH",
                path,
                key=key,
                body=b"{not json",
                headers={"content-type": "application/json", "if-match": tag},
            ),
            400,
        )
        assert (await read(port, key, path)).headers["etag"] == tag
        assert await db.fetchval("SELECT count(*) FROM customer_changes") == 0
        assert await db.fetchval("SELECT count(*) FROM api_audit_log") == 1
        # The database refuses it too, whoever writes.
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="never change"):
            await db.execute("UPDATE customers SET ean = $1", EAN_2)


async def test_a_partner_accounts_customer_may_drop_the_iban(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)  # partner-account: the partner is paid
        customer = await enrol(port, key, EAN_1, iban=IBAN)
        path = f"/v1/customers/{customer['id']}"
        tag = (await read(port, key, path)).headers["etag"]
        reply = await patch(port, key, path, {"iban": None}, **{"if-match": tag})
        assert reply.status == 200 and reply.json()["iban"] is None, reply.body


async def test_another_partners_customer_is_404_whatever_the_headers(settings):
    async with serving_api(settings) as (db, port):
        key_a = await partner_with_key(db, "alpha", SCOPES)
        key_b = await partner_with_key(db, "bravo", SCOPES)
        theirs = await enrol(port, key_b, EAN_1)
        path = f"/v1/customers/{theirs['id']}"
        tag = (await read(port, key_b, path)).headers["etag"]
        before = await db.fetch("SELECT * FROM mandates ORDER BY year")

        for condition in ({}, {"if-match": tag}, {"if-match": "*"}):
            reply = await patch(port, key_a, path, {"name": "Taken"}, **condition)
            assert theirs["id"] not in problem_of(reply, 404)["detail"]
        for condition in ({}, {"if-none-match": tag}, {"if-none-match": "*"}):
            problem_of(await read(port, key_a, path, **condition), 404)
        ended = await end(port, key_a, theirs["id"], {"effective": str(today()), "reason": "x"})
        problem_of(ended, 404)
        renewal = {"year": today().year + 1, "consent": enrolment(EAN_1)["consent"]}
        problem_of(
            await call(
                port,
                "POST",
                f"{path}/mandates",
                key=key_a,
                json_body=renewal,
                headers=idem(),
            ),
            404,
        )
        unchanged = await read(port, key_b, path)
        assert unchanged.json() == theirs and unchanged.headers["etag"] == tag
        assert await db.fetch("SELECT * FROM mandates ORDER BY year") == before
        assert (
            await db.fetchval("SELECT count(*) FROM api_audit_log WHERE partner_id = 'alpha'") == 0
        )


async def books(settings, tmp_path):
    """Customer A of partner P1 (direct) with its 2026 mandate and charger CP-A: sessions on 3
    August and 1 September 2026; Q2 2026 closed."""
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a-aug", datetime(2026, 8, 3, 8, tzinfo=UTC), "7")
        await add_session(db, "CP-A", "a-sep", datetime(2026, 9, 1, 8, tzinfo=UTC), "3")
        assert "close:done" in await close(db, cfg, Q2)
    return cfg


async def test_ending_revokes_from_the_day_and_later_sessions_stop_counting(settings, tmp_path):
    cfg = await books(settings, tmp_path)
    async with serving_api(settings) as (db, port):
        key = (await create_key(db, "P1", SCOPES)).key
        key_id = parse_key(key)[0]
        path = "/v1/customers/A"
        before = (await read(port, key, path)).json()

        # A closed quarter stays as it was closed.
        closed = await end(port, key, "A", {"effective": "2026-06-15", "reason": "moved house"})
        assert problem_of(closed, 409)["type"] == "urn:ere-proxy:problem:quarter-closed"
        assert (await read(port, key, path)).json() == before

        # The IBAN may change after a closed quarter: the next payout run pays the new one.
        tag = (await read(port, key, path)).headers["etag"]
        new_iban = await patch(port, key, path, {"iban": "NL44RABO0123456789"}, **{"if-match": tag})
        assert new_iban.status == 200, new_iban.body

        body = {"effective": "2026-08-15", "reason": "moved house", "reference": "case 7"}
        headers = idem()
        ended = await end(port, key, "A", body, headers)
        assert ended.status == 200, ended.body
        (mandate,) = ended.json()["mandates"]
        assert mandate["revoked_effective"] == "2026-08-15" and mandate["revoked_at"] is not None
        current = await read(port, key, path)
        assert current.json() == ended.json() and current.headers["etag"] == ended.headers["etag"]
        replay = await end(port, key, "A", body, headers)
        assert (replay.status, replay.json()) == (200, ended.json())
        problem_of(await end(port, key, "A", body | {"reason": "other"}, headers), 409)

        revocation = json.loads(
            await db.fetchval("SELECT revocation::text FROM mandates WHERE customer_id = 'A'")
        )
        assert (revocation["channel"], revocation["actor"], revocation["reason"]) == (
            "api",
            key_id,
            "moved house",
        )
        assert revocation["reference"] == "case 7"
        audit = await db.fetchrow(
            "SELECT before::text AS before, after::text AS after FROM api_audit_log "
            "WHERE action = 'customer.end'"
        )
        assert json.loads(audit["after"]) == ended.json()
        assert json.loads(audit["before"])["mandates"][0]["revoked_at"] is None
        assert await db.fetchval("SELECT count(*) FROM api_audit_log") == 2  # IBAN, end

        # Ended already, and a mandate is revoked once: neither a repeat nor an earlier end.
        for effective in ("2026-08-15", "2026-08-01", "2026-10-01"):
            again = await end(port, key, "A", {"effective": effective, "reason": "again"})
            assert problem_of(again, 409)["type"] == "urn:ere-proxy:problem:ended-already"
        assert (await read(port, key, path)).json() == ended.json()

        assert "close:done" in await close(db, cfg, Q3)
        sessions = (await read(port, key, "/v1/sessions?customer=A")).json()["data"]
        verdicts = {s["transaction_id"]: s["eligibility"] for s in sessions}
        assert verdicts["a-aug"]["status"] == "eligible"
        assert verdicts["a-sep"]["status"] == "ineligible"
        assert verdicts["a-sep"]["reason"] == "no-valid-mandate"


async def test_renewal_records_next_years_mandate_and_an_end_revokes_it_too(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        customer = await enrol(port, key, EAN_1)
        path = f"/v1/customers/{customer['id']}/mandates"
        year = today().year
        consent = enrolment(EAN_1)["consent"]

        async def renew(body, headers=None):
            sent = headers or idem()
            return await call(port, "POST", path, key=key, json_body=body, headers=sent)

        headers = idem()
        renewed = await renew({"year": year + 1, "consent": consent}, headers)
        assert renewed.status == 201, renewed.body
        assert renewed.headers["location"] == f"/v1/customers/{customer['id']}"
        assert [m["year"] for m in renewed.json()["mandates"]] == [year, year + 1]
        assert renewed.json()["mandates"][1]["valid_from"] == f"{year + 1}-01-01"
        replay = await renew({"year": year + 1, "consent": consent}, headers)
        assert (replay.status, replay.json()) == (201, renewed.json())
        for taken in (year, year + 1):
            problem = problem_of(await renew({"year": taken, "consent": consent}), 409)
            assert problem["type"] == "urn:ere-proxy:problem:mandate-exists"
        for body, field in (
            ({"year": year - 1, "consent": consent}, "year"),
            ({"year": year + 2, "consent": consent}, "year"),
            ({"year": 99999, "consent": consent}, "year"),
            ({"year": str(year + 1), "consent": consent}, "year"),
            ({"year": year + 1}, "consent"),
            (
                {"year": year + 1, "consent": consent | {"accepted_at": "2999-01-01T00:00:00Z"}},
                "consent.accepted_at",
            ),
            (
                {"year": year + 1, "consent": consent | {"user_reference": "\x00"}},
                "consent.user_reference",
            ),
        ):
            reply = await renew(body)
            assert problem_of(reply, 422)["errors"][0]["field"] == field, (body, reply.body)
        assert await db.fetchval("SELECT count(*) FROM mandates") == 2
        audit = await db.fetchval(
            "SELECT count(*) FROM api_audit_log WHERE action = 'customer.mandate'"
        )
        assert audit == 1

        # An end revokes next year's mandate too: it covers nothing.
        last_day = today()
        ended = await end(port, key, customer["id"], {"effective": str(last_day), "reason": "x"})
        assert ended.status == 200, ended.body
        this_year, next_year = ended.json()["mandates"]
        if last_day < date(year, 12, 31):  # on 31 December this year's ends anyway
            assert this_year["revoked_effective"] == str(last_day)
        assert next_year["revoked_effective"] == f"{year}-12-31"


async def test_hostile_ends_are_refused_and_change_nothing(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        customer = await enrol(port, key, EAN_3)
        ok = {"effective": str(today()), "reason": "moved"}
        missing = await call(
            port, "POST", f"/v1/customers/{customer['id']}/end", key=key, json_body=ok
        )
        assert problem_of(missing, 400)["errors"][0]["field"] == "Idempotency-Key"
        for body, field in (
            ({"effective": "yesterday", "reason": "x"}, "effective"),
            ({"effective": "2026-13-01", "reason": "x"}, "effective"),
            ({"effective": "9999-12-31", "reason": "x"}, "effective"),
            ({"effective": "1999-12-31", "reason": "x"}, "effective"),
            ({"effective": 20260815, "reason": "x"}, "effective"),
            ({"effective": "x" * 5000, "reason": "x"}, "effective"),
            ({"effective": str(today())}, "reason"),
            ({"effective": str(today()), "reason": ""}, "reason"),
            ({"effective": str(today()), "reason": "x" * 600}, "reason"),
            ({"effective": str(today()), "reason": "a\x00b"}, "reason"),
            ({"effective": str(today()), "reason": "x", "reference": "\u202e"}, "reference"),
            ({"effective": str(today()), "reason": "x", "mandates": []}, "mandates"),
        ):
            reply = await end(port, key, customer["id"], body)
            assert problem_of(reply, 422)["errors"][0]["field"] == field, (body, reply.body)
        for odd in ("%00", "..", "x" * 65, "cus_unknown"):
            problem_of(await end(port, key, odd, ok), 404, 422)
        assert await db.fetchval("SELECT count(*) FROM mandates WHERE revoked_at IS NOT NULL") == 0
        assert await db.fetchval("SELECT count(*) FROM api_audit_log") == 1
        assert (await end(port, key, customer["id"], ok)).status == 200


async def test_a_charger_is_answered_with_an_etag(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        customer = await enrol(port, key, EAN_1)
        body = {"identity": "CP-TAG", "upstream": "wss://csms.example.com/ocpp"}
        registered = await call(
            port, "POST", "/v1/chargers", key=key, json_body=body, headers=idem()
        )
        assert registered.status == 201
        got = await read(port, key, "/v1/chargers/CP-TAG")
        tag = got.headers["etag"]
        unchanged = await read(port, key, "/v1/chargers/CP-TAG", **{"if-none-match": tag})
        assert (unchanged.status, unchanged.body, unchanged.headers["etag"]) == (304, b"", tag)
        valid_from = (datetime.now(DUTCH_TIME) - timedelta(minutes=1)).isoformat()
        link = {"customer_id": customer["id"], "max_power_w": 11000, "valid_from": valid_from}
        linked = await call(
            port, "POST", "/v1/chargers/CP-TAG/links", key=key, json_body=link, headers=idem()
        )
        assert linked.status == 201, linked.body
        changed = await read(port, key, "/v1/chargers/CP-TAG", **{"if-none-match": tag})
        assert changed.status == 200 and changed.headers["etag"] != tag
        assert changed.json()["current_link"]["customer_id"] == customer["id"]
        key_b = await partner_with_key(db, "bravo", SCOPES)
        for condition in ({}, {"if-none-match": tag}, {"if-none-match": "*"}):
            problem_of(await read(port, key_b, "/v1/chargers/CP-TAG", **condition), 404)


async def test_a_customers_language_is_enrolled_shown_changed_and_given_back_to_the_partner(
    settings,
):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES, payout_model="direct")
        plain = await enrol(port, key, EAN_1, iban=IBAN)
        assert plain["language"] is None  # the partner's language (nl unless it chose en)
        english = await enrol(port, key, EAN_2, iban=IBAN, language="en")
        path = f"/v1/customers/{english['id']}"
        assert english["language"] == "en"
        stored = "SELECT language FROM customers WHERE customer_id = $1"
        assert await db.fetchval(stored, english["id"]) == "en"

        tag = (await read(port, key, path)).headers["etag"]
        back = await patch(port, key, path, {"language": None}, **{"if-match": tag})
        assert back.status == 200 and back.json()["language"] is None
        assert await db.fetchval(stored, english["id"]) is None
        tag = back.headers["etag"]
        dutch = await patch(port, key, path, {"language": "nl"}, **{"if-match": tag})
        assert dutch.json()["language"] == "nl"
        change = await db.fetchrow(
            "SELECT before, after FROM customer_changes WHERE customer_id = $1 "
            "ORDER BY change_id DESC LIMIT 1",
            english["id"],
        )
        assert (json.loads(change["before"]), json.loads(change["after"])) == (
            {"language": None},
            {"language": "nl"},
        )

        tag = dutch.headers["etag"]
        for bad in ("de", "NL", "", 1, ["nl"]):
            refused = await patch(port, key, path, {"language": bad}, **{"if-match": tag})
            assert problem_of(refused, 422)["errors"][0]["field"] == "language", bad
        body = enrolment(EAN_3, language="fr")
        refused = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=idem())
        assert problem_of(refused, 422)["errors"][0]["field"] == "language"
