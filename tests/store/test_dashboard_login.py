"""Logging in to the partner dashboard over plain HTTP, on the real server and database: the
session cookie and what it may do, CSRF on every form, the lockouts (per user, per address),
log-out, and the `partners users` commands.
"""

from __future__ import annotations

import argparse
import io
import re

from proxy.api.dashboard.address_lockout import FAILURES
from proxy.api.dashboard.users import MAX_FAILURES
from proxy.api.dashboard.users_cli import users_command
from proxy.runtime.config import Config, DatabaseSettings
from testkit.dashboard_client import PASSWORD, Dashboard, csrf_of, user_with_password
from testkit.partner_api import partner_with_key, serving_api

INSECURE = {"dashboard_secure_cookie": False}


async def _partner(db, partner_id: str = "acme") -> None:
    await partner_with_key(db, partner_id, ("customers:read",))


async def test_an_admin_logs_in_sees_the_overview_and_logs_out(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _partner(db)
        await user_with_password(db, "acme", "Admin@Acme.example", "admin")
        async with Dashboard(port) as browser:
            assert (await browser.get("/dashboard")).headers["location"] == "/dashboard/login"
            login = await browser.get("/dashboard/login")
            assert login.status_code == 200
            policy = login.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            answer = await browser.log_in("admin@acme.example")
            assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
            cookie = next(
                value
                for key, value in answer.headers.multi_items()
                if key == "set-cookie" and value.startswith("ere_dashboard=")
            )
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/dashboard" in cookie
            overview = await browser.get("/dashboard")
            assert overview.status_code == 200, overview.text
            assert "Portfolio overview" in overview.text and "Partner acme" in overview.text
            assert overview.headers["cache-control"] == "no-store"
            out = await browser.submit("/dashboard/logout", {})
            assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
            assert (await browser.get("/dashboard")).status_code == 303
            assert await db.fetchval("SELECT count(*) FROM dashboard_sessions") == 0


async def test_the_cookie_is_secure_and_host_only_by_default(settings: DatabaseSettings):
    async with serving_api(settings) as (db, port):
        await _partner(db)
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            login = await browser.get("/dashboard/login")
            form_cookie = login.headers["set-cookie"]
            assert form_cookie.startswith("__Host-ere_dashboard_login=")
            assert "Secure" in form_cookie and "Path=/;" in form_cookie
            # Over plain http the jar keeps the Secure cookie back, as a browser does: the
            # log-in form's token cannot be matched, so nothing is signed in.
            answer = await browser.submit(
                "/dashboard/login", {"email": "admin@acme.example", "password": PASSWORD}
            )
            assert answer.status_code == 403
            token = csrf_of(login.text)
            answer = await browser.http.post(
                "/dashboard/login",
                data={"csrf": token, "email": "admin@acme.example", "password": PASSWORD},
                headers={"cookie": f"__Host-ere_dashboard_login={token}"},
            )
            assert answer.status_code == 303
            session = next(
                value
                for key, value in answer.headers.multi_items()
                if key == "set-cookie" and value.startswith("__Host-ere_dashboard=")
            )
            assert "Secure" in session and "HttpOnly" in session and "Path=/;" in session


async def test_a_login_without_the_forms_token_is_refused(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _partner(db)
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.get("/dashboard/login")
            for token in ("", "forged"):
                answer = await browser.submit(
                    "/dashboard/login",
                    {"email": "admin@acme.example", "password": PASSWORD},
                    csrf=token,
                )
                assert answer.status_code == 403
        async with Dashboard(port) as stranger:  # no form cookie at all: a cross-site post
            answer = await stranger.post(
                "/dashboard/login",
                {"csrf": "x" * 43, "email": "admin@acme.example", "password": PASSWORD},
            )
            assert answer.status_code == 403
        assert await db.fetchval("SELECT count(*) FROM dashboard_sessions") == 0


async def test_forms_without_the_sessions_csrf_token_are_refused(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _partner(db)
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            await browser.get("/dashboard")
            real = csrf_of(browser.page)
            altered = real[:-1] + ("B" if real.endswith("A") else "A")  # never the token itself
            for token in (None, "", altered):
                data = {} if token is None else {"csrf": token}
                answer = await browser.post("/dashboard/logout", data)
                assert answer.status_code == 403, answer.text
            assert (await browser.get("/dashboard")).status_code == 200  # still signed in


async def test_repeated_failures_lock_the_user_even_with_the_right_password(
    settings: DatabaseSettings,
):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _partner(db)
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            for _ in range(MAX_FAILURES):
                answer = await browser.log_in("admin@acme.example", "wrong password!!")
                assert answer.status_code == 401
            locked = await browser.log_in("admin@acme.example")
            assert locked.status_code == 401 and "locked for a while" in locked.text
            assert "set-cookie" not in locked.headers or "ere_dashboard=" not in "".join(
                value for key, value in locked.headers.multi_items() if key == "set-cookie"
            )
            # An unknown address is answered alike: nothing tells them apart.
            unknown = await browser.log_in("nobody@acme.example", "wrong password!!")
            assert unknown.status_code == 401 and re.sub(
                r'value="[^"]*"', "", unknown.text
            ) == re.sub(r'value="[^"]*"', "", locked.text)
        await db.execute("UPDATE partner_users SET locked_until = now() - interval '1 second'")
        async with Dashboard(port) as browser:
            assert (await browser.log_in("admin@acme.example")).status_code == 303


async def test_an_address_past_its_failures_is_locked_out_for_every_user(
    settings: DatabaseSettings,
):
    async with serving_api(settings, forwarded_for_hops=1, **INSECURE) as (db, port):
        await _partner(db)
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port, address="203.0.113.7") as guesser:
            for number in range(FAILURES):
                answer = await guesser.log_in(f"user{number}@acme.example", "wrong password!!")
                assert answer.status_code == 401
            refused = await guesser.log_in("admin@acme.example")
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        async with Dashboard(port, address="198.51.100.9") as elsewhere:
            assert (await elsewhere.log_in("admin@acme.example")).status_code == 303


async def test_removing_a_user_ends_their_sessions(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _partner(db)
        config = Config(database=settings)
        args = argparse.Namespace(
            partner_id="acme", user_action="add", email="Viewer@Acme.example", role="viewer"
        )
        out, err = io.StringIO(), io.StringIO()
        assert await users_command(config, args, out, err, io.StringIO(PASSWORD + "\n")) == 0
        short = argparse.Namespace(
            partner_id="acme", user_action="add", email="b@acme.example", role="viewer"
        )
        assert await users_command(config, short, out, err, io.StringIO("short\n")) == 2
        assert "12 to 1024 characters" in err.getvalue()
        again = await users_command(config, args, out, err, io.StringIO(PASSWORD + "\n"))
        assert again == 2 and "is a user already" in err.getvalue()
        listing = argparse.Namespace(partner_id="acme", user_action="list", json=False)
        listed = io.StringIO()
        assert await users_command(config, listing, listed, err) == 0
        assert "viewer@acme.example" in listed.getvalue() and "viewer" in listed.getvalue()
        stored = await db.fetchval("SELECT password_hash FROM partner_users")
        assert stored.startswith("scrypt$") and PASSWORD not in stored
        async with Dashboard(port) as browser:
            assert (await browser.log_in("viewer@acme.example")).status_code == 303
            assert (await browser.get("/dashboard")).status_code == 200
            removal = argparse.Namespace(
                partner_id="acme", user_action="remove", email="viewer@acme.example"
            )
            assert await users_command(config, removal, out, err) == 0
            assert (await browser.get("/dashboard")).status_code == 303
            assert (await browser.log_in("viewer@acme.example")).status_code == 401


async def test_a_new_log_in_ends_the_browsers_earlier_session(settings: DatabaseSettings):
    async with serving_api(settings, **INSECURE) as (db, port):
        await _partner(db)
        await user_with_password(db, "acme", "admin@acme.example", "admin")
        async with Dashboard(port) as browser:
            await browser.log_in("admin@acme.example")
            first = browser.http.cookies["ere_dashboard"]
            await browser.log_in("admin@acme.example")
            second = browser.http.cookies["ere_dashboard"]
            assert first != second
            assert await db.fetchval("SELECT count(*) FROM dashboard_sessions") == 1
        async with Dashboard(port) as replay:  # the earlier token opens nothing any more
            replay.http.cookies.set("ere_dashboard", first, path="/dashboard")
            assert (await replay.get("/dashboard")).status_code == 303
            replay.http.cookies.set("ere_dashboard", second, path="/dashboard")
            assert (await replay.get("/dashboard")).status_code == 200
