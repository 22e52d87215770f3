"""The partner dashboard's pages over plain HTTP, on the real server and database: what each role
may see and do, that every page stays inside the user's partner (another partner's object is a
404 and never shows), hostile text shown as text, the forms (enrolment, MID scan, API keys)
writing through the partner API's data classes with the user in the audit log, the live
fragments, the earnings and statements of a paid quarter, and the payouts CSV.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from proxy.api.app import OPENAPI_URL
from proxy.api.dashboard import customer_pages
from proxy.api.keys import SCOPES
from proxy.api.webhook_events import queue_ping
from proxy.runtime.config import DatabaseSettings
from testkit.dashboard_client import (
    Dashboard,
    chart_series,
    csrf_of,
    form_value,
    user_with_password,
)
from testkit.paid_quarters import state_and_pay
from testkit.partner_api import call, enrolment, idem, partner_with_key, seed_session, serving_api

INSECURE = {"dashboard_secure_cookie": False}
EAN_A = "871687120000000004"
EAN_B = "871687120000000011"
EAN_C = "871687120000000028"
XSS = "<script>alert(1)</script>"


async def _with_customer(db, port, partner: str, ean: str, identity: str, **fields) -> dict:
    """`partner` with a key of every scope, a customer enrolled through the API and `identity`
    linked to it; the customer (with the key as "key")."""
    key = await partner_with_key(db, partner, SCOPES)
    made = await call(
        port, "POST", "/v1/customers", key=key, json_body=enrolment(ean, **fields), headers=idem()
    )
    assert made.status == 201, made.body
    customer = made.json()
    linked = await call(
        port,
        "POST",
        f"/v1/chargers/{identity}/links",
        key=key,
        json_body={"customer_id": customer["id"], "max_power_w": 11000},
        headers=idem(),
    )
    assert linked.status == 201, linked.body
    return customer | {"key": key}


def _enrolment_form(idem: str, ean: str) -> dict[str, str]:
    """The enrolment form as an admin fills it in (the consent time left empty: now)."""
    return {
        "idem": idem,
        "name": "Anna de Vries",
        "email": "anna@example.nl",
        "address": "Kerkstraat 1",
        "postcode": "1234 AB",
        "city": "Utrecht",
        "ean": ean,
        "grid_operator": "Stedin",
        "consent_text_version": "v3",
        "consent_reference": "form-17",
        "consent_given": "yes",
    }


async def test_a_viewer_reads_every_page_but_changes_nothing(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _with_customer(db, port, "acme", EAN_A, "CP-A")
        await user_with_password(db, "acme", "viewer@acme.example", "viewer")
        async with Dashboard(port) as browser:
            assert (await browser.log_in("viewer@acme.example")).status_code == 303
            document = (await call(port, "GET", OPENAPI_URL)).json()
            assert not [path for path in document["paths"] if path.startswith("/dashboard")]
            for path in (
                "/dashboard",
                "/dashboard/customers",
                "/dashboard/sessions",
                "/dashboard/earnings",
                "/dashboard/statements",
                "/dashboard/scans",
            ):
                answer = await browser.get(path)
                assert answer.status_code == 200, (path, answer.text[:500])
            home = (await browser.get("/dashboard")).text
            assert 'href="/dashboard/keys"' not in home and 'href="/dashboard/webhooks"' not in home
            assert 'id="enrol-form"' not in (await browser.get("/dashboard/customers")).text
            assert 'id="scan-form"' not in (await browser.get("/dashboard/scans")).text
            for path in ("/dashboard/keys", "/dashboard/webhooks"):
                assert (await browser.get(path)).status_code == 403
            await browser.get("/dashboard/customers")
            token = csrf_of(browser.page)
            attempts = {
                "/dashboard/customers": {"name": "Mallory", "idem": "dash-" + "0" * 32},
                "/dashboard/scans": {"portfolio": "CP-A", "idem": "dash-" + "1" * 32},
                "/dashboard/keys": {"scope": "customers:read"},
            }
            for path, data in attempts.items():
                answer = await browser.submit(path, data, csrf=token)
                assert answer.status_code == 403, (path, answer.text[:300])
        assert await db.fetchval("SELECT count(*) FROM customers") == 1
        assert await db.fetchval("SELECT count(*) FROM mid_scans") == 0
        assert await db.fetchval("SELECT count(*) FROM partner_api_keys") == 1


async def test_another_partners_objects_are_not_found_and_never_shown(
    settings: DatabaseSettings,
):
    async with serving_api(settings, **INSECURE) as (db, port):
        mine = await _with_customer(db, port, "acme", EAN_A, "CP-A")
        theirs = await _with_customer(db, port, "bravo", EAN_B, "CP-B", name="Bravo Klant")
        started = await db.fetchval("SELECT now() + interval '1 second'")
        ended = started + timedelta(hours=1)
        await seed_session(db, "CP-B", "tx-b", started_at=started, stopped_at=ended, kwh="5")
        their_key_id = theirs["key"][4:16]
        scan = await call(
            port,
            "POST",
            "/v1/scans",
            key=theirs["key"],
            json_body={"chargers": [{"identity": "CP-B"}]},
            headers=idem(),
        )
        assert scan.status == 201
        hook = await db.fetchval(
            "INSERT INTO webhook_endpoints (webhook_id, partner_id, url, events, secret, "
            "created_by) VALUES ('whk_' || md5('b'), 'bravo', 'https://hooks.example/b', "
            "ARRAY['session.completed'], 'whsec_x', $1) RETURNING webhook_id",
            their_key_id,
        )
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            for path in (
                f"/dashboard/customers/{theirs['id']}",
                f"/dashboard/scans/{scan.json()['id']}",
                f"/dashboard/webhooks/{hook}",
                f"/dashboard/statements/2025Q3-{theirs['id']}/html",
            ):
                answer = await browser.get(path)
                assert answer.status_code == 404, (path, answer.text[:300])
                assert "Bravo" not in answer.text
            for path in (
                "/dashboard",
                "/dashboard/customers",
                "/dashboard/sessions",
                "/dashboard/earnings",
                "/dashboard/scans",
                "/dashboard/webhooks",
                "/dashboard/keys",
            ):
                answer = await browser.get(path)
                assert answer.status_code == 200, path
                for secret in (theirs["id"], "Bravo Klant", "CP-B", their_key_id, "tx-b"):
                    assert secret not in answer.text, (path, secret)
            filtered = await browser.get(f"/dashboard/sessions?customer={theirs['id']}")
            assert "No sessions yet" in filtered.text and "CP-B" not in filtered.text
            assert mine["id"] in (await browser.get("/dashboard/customers")).text
            token = csrf_of(browser.page)
            for action in ("rotate", "revoke"):
                answer = await browser.submit(
                    f"/dashboard/keys/{their_key_id}/{action}", {"grace_hours": "0"}, csrf=token
                )
                assert answer.status_code == 404, action
        row = await db.fetchrow(
            "SELECT revoked_at, expires_at FROM partner_api_keys WHERE key_id = $1", their_key_id
        )
        assert tuple(row) == (None, None)
        assert await db.fetchval("SELECT count(*) FROM partner_api_keys") == 2


async def test_hostile_text_is_shown_as_text(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _with_customer(db, port, "acme", EAN_A, "CP-A", name=f"Jan {XSS}")
        await db.execute(
            "UPDATE partners SET branding = jsonb_set(branding, '{display_name}', to_jsonb($1::text))"
            " WHERE partner_id = 'acme'",
            f'Acme"><img src=x>{XSS}',
        )
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            for path in ("/dashboard/customers", "/dashboard"):
                page = (await browser.get(path)).text
                assert XSS not in page and "<img src=x>" not in page
                assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
            found = await browser.get(f"/dashboard/sessions?charger={XSS}&customer=%22%3E")
            assert found.status_code == 200 and XSS not in found.text
            assert "&lt;script&gt;" in found.text


async def test_an_admin_enrols_a_customer_once_and_the_user_is_audited(
    settings: DatabaseSettings,
):
    async with serving_api(settings, **INSECURE) as (db, port):
        await partner_with_key(db, "acme", ("customers:read",))
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        user_id = await db.fetchval("SELECT user_id FROM partner_users")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            await browser.get("/dashboard/customers")
            wrong_check_digit = EAN_C[:-1] + "9"
            form = _enrolment_form(form_value(browser.page, "idem"), wrong_check_digit)
            refused = await browser.submit("/dashboard/customers", form)
            assert refused.status_code == 422 and "ean" in refused.text
            assert 'value="Anna de Vries"' in refused.text  # the form keeps what was typed
            form["ean"], form["idem"] = EAN_C, form_value(browser.page, "idem")
            made = await browser.submit("/dashboard/customers", form)
            assert made.status_code == 303, made.text[:500]
            again = await browser.submit("/dashboard/customers", form, csrf=csrf_of(refused.text))
            assert again.headers["location"] == made.headers["location"]  # replayed, not twice
            shown = await browser.get(made.headers["location"])
            assert "The customer is enrolled" in shown.text and "Anna de Vries" in shown.text
            assert 'data-state="enrolled"' in shown.text
            form["idem"] = form_value((await browser.get("/dashboard/customers")).text, "idem")
            taken = await browser.submit("/dashboard/customers", form)
            assert taken.status_code == 409 and "already enrolled" in taken.text
        assert await db.fetchval("SELECT count(*) FROM customers") == 1
        mandate = await db.fetchrow("SELECT channel, actor FROM mandates")
        assert tuple(mandate) == ("api", f"user:{user_id}")
        audit = await db.fetchrow("SELECT key_id, user_id, action FROM api_audit_log")
        assert tuple(audit) == (None, user_id, "customer.enrol")


async def test_the_same_enrolment_form_sent_a_second_later_is_replayed(
    settings: DatabaseSettings, monkeypatch
):
    """A consent time left empty means "now": the same form sent again a second later (a double
    click, a browser's retry) shows the customer enrolled the first time, not a refusal."""
    seconds = (datetime(2026, 6, 1, 10, 0, n, tzinfo=UTC) for n in range(60))

    class Ticking(datetime):
        @classmethod
        def now(cls, tz=None):  # a second later at every reading
            return next(seconds)

    monkeypatch.setattr(customer_pages, "datetime", Ticking)
    async with serving_api(settings, **INSECURE) as (db, port):
        await partner_with_key(db, "acme", ("customers:read",))
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            await browser.get("/dashboard/customers")
            csrf = csrf_of(browser.page)
            form = _enrolment_form(form_value(browser.page, "idem"), EAN_C)
            made = await browser.submit("/dashboard/customers", form, csrf=csrf)
            again = await browser.submit("/dashboard/customers", form, csrf=csrf)
        assert made.status_code == 303, made.text[:500]
        assert again.status_code == 303, again.text[:500]
        assert again.headers["location"] == made.headers["location"]
        assert await db.fetchval("SELECT count(*) FROM customers") == 1


async def test_an_admin_runs_a_mid_scan_and_reads_its_report(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _with_customer(db, port, "acme", EAN_A, "CP-A")
        await db.execute(
            "INSERT INTO charger_events (event_id, identity, kind, received_at, body) "
            "VALUES (gen_random_uuid(), 'CP-A', 'charger_booted', now(), '{}')"
        )
        await db.execute(
            "INSERT INTO charger_boots (identity, vendor, model, meter_type, meter_serial, "
            "booted_at) VALUES ('CP-A', 'Example', 'HomeBox', 'Iskra WM3M4', 'SN-1', now())"
        )
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            overview = (await browser.get("/dashboard")).text
            assert 'data-verdict="needs_check"' in overview and "Iskra WM3M4" in overview
            await browser.get("/dashboard/scans")
            form = {
                "idem": form_value(browser.page, "idem"),
                "all_chargers": "yes",
                "portfolio": ",Iskra WM3M4,SN-9,3000\nCP-NOBODY",
            }
            made = await browser.submit("/dashboard/scans", form)
            assert made.status_code == 303, made.text[:500]
            report = (await browser.get(made.headers["location"])).text
            rows = re.findall(r'data-identity="([^"]*)" data-verdict="([^"]*)"', report)
            assert rows == [
                ("", "needs_check"),
                ("CP-NOBODY", "does_not_qualify"),
                ("CP-A", "needs_check"),
            ]
            assert 'id="scan-needs_check">2<' in report
        scan = await db.fetchrow("SELECT key_id, user_id FROM mid_scans")
        assert scan["key_id"] is None and scan["user_id"] is not None


async def test_an_admin_makes_rotates_and_revokes_keys(settings: DatabaseSettings):
    async with serving_api(settings, auth_cache_seconds=0, **INSECURE) as (db, port):
        await partner_with_key(db, "acme", ("customers:read",))
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            await browser.get("/dashboard/keys")
            made = await browser.submit(
                "/dashboard/keys", {"scope": ["customers:read", "sessions:read", "bogus"]}
            )
            assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
            key = re.search(r'id="new-key-value" readonly value="(ere_[^"]+)"', made.text)[1]
            assert (await call(port, "GET", "/v1/customers", key=key)).status == 200
            listed = (await browser.get("/dashboard/keys")).text
            assert key not in listed and key[4:16] in listed
            rotated = await browser.submit(
                f"/dashboard/keys/{key[4:16]}/rotate", {"grace_hours": "0"}
            )
            assert rotated.status_code == 201
            successor = re.search(r'readonly value="(ere_[^"]+)"', rotated.text)[1]
            assert (await call(port, "GET", "/v1/customers", key=key)).status == 401
            assert (await call(port, "GET", "/v1/customers", key=successor)).status == 200
            revoked = await browser.submit(f"/dashboard/keys/{successor[4:16]}/revoke", {})
            assert revoked.status_code == 303
            assert (await call(port, "GET", "/v1/customers", key=successor)).status == 401
            scopes = await db.fetchval(
                "SELECT scopes FROM partner_api_keys WHERE key_id = $1", key[4:16]
            )
            assert scopes == ["customers:read", "sessions:read"]
        actions = await db.fetch(
            "SELECT action, key_id IS NULL AND user_id IS NOT NULL AS by_user "
            "FROM api_audit_log ORDER BY audit_id"
        )
        assert [tuple(row) for row in actions] == [
            ("key.create", True),
            ("key.rotate", True),
            ("key.revoke", True),
        ]


async def test_live_fragments_show_new_sessions_and_need_a_session(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        customer = await _with_customer(db, port, "acme", EAN_A, "CP-A")
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as anonymous:
            for path in ("/dashboard/live/sessions", "/dashboard/live/chargers"):
                assert (await anonymous.get(path)).status_code == 401
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            page = (await browser.get("/dashboard/sessions")).text
            assert 'data-live="/dashboard/live/sessions' in page and "No sessions yet" in page
            started = await db.fetchval("SELECT now() + interval '1 second'")  # after the link
            session = await seed_session(db, "CP-A", "tx-1", started_at=started)
            fragment = await browser.get(f"/dashboard/live/sessions?customer={customer['id']}")
            assert fragment.status_code == 200 and "<html" not in fragment.text
            assert f'data-session="{session}"' in fragment.text
            assert 'data-eligibility="unassessed"' in fragment.text
            chargers = (await browser.get("/dashboard/live/chargers")).text
            assert 'id="count-charging">1<' in chargers and 'id="count-connected">1<' in chargers


async def test_a_paid_quarter_shows_its_earnings_statement_and_payouts(
    settings: DatabaseSettings,
):
    async with serving_api(settings, **INSECURE) as (db, port):
        customer = await _with_customer(db, port, "acme", EAN_A, "CP-A", name="=HYPERLINK(1)")
        quarter = await state_and_pay(db, "CP-A")
        await user_with_password(db, "acme", "viewer@acme.example", "viewer")
        async with Dashboard(port) as browser:
            await browser.log_in("viewer@acme.example")
            earnings = (await browser.get(f"/dashboard/earnings?quarter={quarter}")).text
            assert 'data-closed="yes"' in earnings
            by_customer = chart_series(earnings, "customers")
            statement = await call(
                port,
                "GET",
                f"/v1/statements/{quarter}-{customer['id']}",
                key=customer["key"],
            )
            net = statement.json()["totals"]["net"]
            assert by_customer == [["=HYPERLINK(1)", net]]
            months = chart_series(earnings, "months-kwh")
            first = 3 * quarter.number - 2
            assert [label for label, _ in months] == [
                f"{quarter.year}-{m:02d}" for m in range(first, first + 3)
            ]
            assert sum(Decimal(value) for _, value in months) == Decimal(30)
            assert 'id="total-eligible">30.000<' in earnings
            listed = (await browser.get(f"/dashboard/statements?quarter={quarter}")).text
            assert 'data-status="paid"' in listed
            html = await browser.get(f"/dashboard/statements/{quarter}-{customer['id']}/html")
            assert html.status_code == 200 and "HYPERLINK" in html.text
            assert "script-src" not in html.headers["content-security-policy"]
            pdf = await browser.get(f"/dashboard/statements/{quarter}-{customer['id']}/pdf")
            assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
            exported = await browser.get(f"/dashboard/payouts.csv?quarter={quarter}")
            assert exported.headers["content-type"].startswith("text/csv")
            (header, row) = list(csv.reader(io.StringIO(exported.text)))
            assert header[:3] == ["quarter", "customer_id", "customer_name"]
            assert row[:3] == [str(quarter), customer["id"], "'=HYPERLINK(1)"]
            assert row[4] == "paid" and row[3] == net


async def test_an_admin_sees_each_webhooks_health_and_delivery_attempts(
    settings: DatabaseSettings,
):
    async with serving_api(settings, **INSECURE) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read",))
        hook = await db.fetchval(
            "INSERT INTO webhook_endpoints (webhook_id, partner_id, url, events, secret, "
            "created_by) VALUES ('whk_' || md5('a'), 'acme', 'https://hooks.example/<b>', "
            "ARRAY['session.completed'], 'whsec_x', $1) RETURNING webhook_id",
            key[4:16],
        )
        async with db.transaction() as tx:
            delivery = await queue_ping(tx, "acme", hook)
        await db.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, webhook_id, attempted_at, ok, "
            "status, error, duration_ms) VALUES ($1, 1, $2, now(), false, 503, $3, 12)",
            delivery,
            hook,
            "HTTP 503 <i>down</i>",
        )
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            endpoints = (await browser.get("/dashboard/webhooks")).text
            assert f'data-webhook="{hook}"' in endpoints and "failing" in endpoints
            assert "https://hooks.example/&lt;b&gt;" in endpoints
            log = await browser.get(f"/dashboard/webhooks/{hook}")
            assert log.status_code == 200 and f'data-delivery="{delivery}"' in log.text
            assert "503 HTTP 503 &lt;i&gt;down&lt;/i&gt;" in log.text and "<i>down" not in log.text
            assert (await browser.get(f"/dashboard/webhooks/{hook}?state=nope")).status_code == 400
