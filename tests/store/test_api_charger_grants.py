"""Chargers that connect already, given to a partner by the operator: before the grant a
partner cannot claim a charger the proxy has seen charging (409 naming no one), after it the
partner reads and links it, another partner neither sees nor links it, a revoked grant gives it
back; the `partners chargers` command with a fleet file and hostile input."""

from __future__ import annotations

from proxy.api.context import ApiContext
from proxy.api.keys import SCOPES
from proxy.ere.core.factors import load_factor_table
from testkit.ere_admin import EAN_1, EAN_2, Admin, partner_args, refused
from testkit.partner_api import call, enrolment, idem, problem_of, serving_api

CONTEXT = ApiContext(None, None, frozenset({"CP-FLEET-1"}), load_factor_table())


async def customer(port, key, ean) -> str:
    reply = await call(
        port,
        "POST",
        "/v1/customers",
        key=key,
        json_body=enrolment(ean, iban="NL20INGB0001234567"),
        headers=idem(),
    )
    assert reply.status == 201, reply.body
    return reply.json()["id"]


async def link(port, key, identity, customer_id):
    body = {"customer_id": customer_id, "max_power_w": 11000}
    path = f"/v1/chargers/{identity}/links"
    return await call(port, "POST", path, key=key, json_body=body, headers=idem())


async def new_key(run: Admin, partner: str) -> str:
    code, out, _ = await run("partners", "keys", "create", partner, "--scopes", ",".join(SCOPES))
    assert code == 0
    return out.strip()


async def seen(db, identity: str) -> None:
    """The proxy recorded the charger's traffic (it connects already)."""
    await db.execute(
        "INSERT INTO charger_events (event_id, identity, kind, received_at, body) VALUES "
        "(gen_random_uuid(), $1, 'boot', now(), '{}')",
        identity,
    )


async def test_a_charger_that_connects_already_is_a_partners_only_by_the_operators_grant(
    settings, tmp_path
):
    run = Admin(settings)
    async with serving_api(settings, context=CONTEXT) as (db, port):
        for partner in ("alpha", "bravo"):
            await run.ok(*partner_args(partner))
        key_a, key_b = [await new_key(run, partner) for partner in ("alpha", "bravo")]
        cus_a, cus_b = await customer(port, key_a, EAN_1), await customer(port, key_b, EAN_2)
        for identity in ("CP-FLEET-1", "CP-FLEET-2"):
            await seen(db, identity)

        # Seen charging, never linked by alpha: alpha cannot claim it, nor read it.
        taken = await link(port, key_a, "CP-FLEET-2", cus_a)
        assert problem_of(taken, 409)["type"].endswith("charger-taken")
        problem_of(await call(port, "GET", "/v1/chargers/CP-FLEET-2", key=key_a), 404)
        assert await db.fetchval("SELECT count(*) FROM charger_links") == 0

        fleet = tmp_path / "fleet.txt"
        fleet.write_text("# alpha's fleet\nCP-FLEET-1\n\nCP-FLEET-2\n")
        assert "granted 2 charger(s)" in await run.ok(
            "partners", "chargers", "grant", "alpha", "--file", str(fleet)
        )
        assert "granted 0 charger(s)" in await run.ok(
            "partners", "chargers", "grant", "alpha", "CP-FLEET-1"
        )
        listed = await run.json("partners", "chargers", "list", "alpha")
        assert [grant["identity"] for grant in listed] == ["CP-FLEET-1", "CP-FLEET-2"]

        mine = (await call(port, "GET", "/v1/chargers", key=key_a)).json()["data"]
        assert [charger["identity"] for charger in mine] == ["CP-FLEET-1", "CP-FLEET-2"]
        assert (await link(port, key_a, "CP-FLEET-2", cus_a)).status == 201
        assert (await link(port, key_a, "CP-FLEET-1", cus_a)).status == 201  # file-routed too
        # Bravo neither reads, links nor registers alpha's granted charger, nor is told whose.
        for identity in ("CP-FLEET-1", "CP-FLEET-2"):
            problem_of(await call(port, "GET", f"/v1/chargers/{identity}", key=key_b), 404)
            refused_link = await link(port, key_b, identity, cus_b)
            problem_of(refused_link, 409)
            assert b"alpha" not in refused_link.body and cus_a.encode() not in refused_link.body
        body = {"identity": "CP-FLEET-2", "upstream": "wss://csms.example.com/ocpp"}
        registered = await call(
            port, "POST", "/v1/chargers", key=key_b, json_body=body, headers=idem()
        )
        problem_of(registered, 409)

        # The operator cannot grant one partner's charger to another while it is theirs.
        err = await refused(
            run,
            settings,
            ("partners", "chargers", "grant", "bravo", "CP-FLEET-2"),
            "CP-FLEET-2",
            "alpha",
        )
        assert "granted to" in err or "linked now" in err
        await run.ok("partners", "chargers", "revoke", "alpha", "CP-FLEET-1", "CP-FLEET-2")
        assert await run.json("partners", "chargers", "list", "alpha") == []
        # Revoking ends the grant, not the links: alpha's customers keep their periods.
        mine = (await call(port, "GET", "/v1/chargers", key=key_a)).json()["data"]
        assert [charger["identity"] for charger in mine] == ["CP-FLEET-1", "CP-FLEET-2"]


async def test_the_grant_command_refuses_what_it_cannot_grant(settings, tmp_path):
    run = Admin(settings)
    await run.ok(*partner_args("alpha"))
    await refused(run, settings, ("partners", "chargers", "grant", "nobody", "CP-1"), "no partner")
    await refused(run, settings, ("partners", "chargers", "grant", "alpha"), "at least one")
    for bad in ("CP/1", "CP\u202e1", "x" * 49, ""):
        await refused(run, settings, ("partners", "chargers", "grant", "alpha", bad), "identity")
    await refused(run, settings, ("partners", "chargers", "revoke", "alpha", "CP-1"), "not granted")
    binary = tmp_path / "binary"
    binary.write_bytes(b"CP-1\n\xff\xfe\n")
    await refused(
        run, settings, ("partners", "chargers", "grant", "alpha", "--file", str(binary)), "UTF-8"
    )
    await refused(
        run,
        settings,
        ("partners", "chargers", "grant", "alpha", "--file", str(tmp_path / "none")),
        "cannot read",
    )
    mixed = tmp_path / "mixed"
    mixed.write_text("CP-OK-1\nCP/bad\n")
    await refused(
        run, settings, ("partners", "chargers", "grant", "alpha", "--file", str(mixed)), "CP/bad"
    )
    assert await run.json("partners", "chargers", "list", "alpha") == []  # all or nothing
