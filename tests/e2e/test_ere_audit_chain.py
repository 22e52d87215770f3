"""The ERE chain as an auditor drives it: chargers charging through the proxy (the `ocpp` package
as charger and back-office), the operator's commands (`ere-proxy ...` processes), a worker that
closes and pays out, and every figure checked against values computed by hand below.

The whole system lives through 2026: each chapter of the story starts every role (proxy,
capture, ERE worker, the embedded PostgreSQL) and runs the operator's commands with the clock of
that day (libfaketime), so the rules that depend on the date (which quarter may close, when a
referral was recorded, backdating, changes never inside a closed quarter, receive times against
the chargers' clocks) are exercised as that year would. Chargers send their sessions some days
after they charged, from their offline queue (within `max_clock_lag_days`); every setting not
about money is the default.

Hand computation (2026: 1 kWh = 0.505 × 183 × 3.6 / 1000 = 0.332694 ERE; €0.30 per ERE; every
figure rounded half up to the cent or to 0.01 ERE once; fee VAT = fee × 21/121; fee 20 %, less
5 points per active referral, never below 10 %; payout minimum €1.00):

Q2 (closed 10 July). Anna referred Bram and Carla, both charged in Q2: 2 active → 10 % (the floor).
  Anna  42.37 kWh → 14.10 ERE → €4.23; fee 10 % 0.42 (VAT 0.07); net 3.81
  Bram  10 kWh    →  3.33 ERE → €1.00; fee 20 % 0.20 (VAT 0.03); net 0.80 (< €1.00: carried over)
  Carla 20 kWh    →  6.65 ERE → €2.00 (1.995); fee 0.40 (VAT 0.07); net 1.60
  Payout Q2: Anna 3.81, Carla 1.60; Bram's 0.80 carried over.
Q3 (closed 10 October). Bram, Carla and Dirk active: 3 → 5 %, floored at 10 %.
  The meter box CP-MOVE moves from Bram to Carla on 15 August; Carla's mandate is revoked with
  effect from 10 September; a session Anna charged on 20 June reaches us after Q2 was paid.
  Anna  regular 30 kWh → 9.98 ERE → €2.99 (2.994); fee 10 % 0.30 (VAT 0.05); net 2.69
  Anna  adjustment of Q2: 47.37 kWh → 15.76 ERE → €4.73, less stated 14.10 / 4.23:
        5 kWh, 1.66 ERE, €0.50; fee 10 % 0.05 (VAT 0.01); net 0.45
  Bram  8 kWh on CP-MOVE (1 August) → 2.66 ERE → €0.80 (0.798); fee 0.16 (VAT 0.03); net 0.64
  Carla 12 kWh on CP-MOVE (20 August) → 3.99 ERE → €1.20 (1.197); fee 0.24 (VAT 0.04); net 0.96
        her 7 kWh of 15 September: no valid mandate (revoked), not counted
  Dirk  6 kWh → 2.00 ERE (1.996) → €0.60; fee 0.12 (VAT 0.02); net 0.48
  Payout Q3: Anna 2.69 + 0.45 = 3.14; Bram 0.64 + 0.80 carried = 1.44; Carla 0.96 and Dirk
  0.48 carried over.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import shutil
from collections.abc import Iterator
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path

import pytest

from proxy.ere.core.ean import check_digit
from testkit.ports import free_port
from testkit.postgres import make_data_dir
from testkit.proxy_process import CONFIG, log_problems
from testkit.system_roles import Roles, charge, query, wait_for_sessions

pytestmark = pytest.mark.slow

D = Decimal


def ean(n: int) -> str:
    body = f"8716871200000{n:04d}"
    return body + str(check_digit(body))


EANS = {"ANNA": ean(11), "BRAM": ean(12), "CARLA": ean(13), "DIRK": ean(14)}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-audit-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def lines(data_dir: Path, quarter: str) -> list[tuple]:
    return asyncio.run(
        query(
            data_dir,
            "SELECT customer_id, delivery_quarter, kind, kwh, ere, eur_per_ere, gross, fee_rate, fee,"
            " fee_vat, net, active_referrals FROM statement_lines l JOIN quarter_closes c"
            " USING (quarter, revision) WHERE l.quarter = $1 AND c.state = 'closed'"
            " ORDER BY customer_id, delivery_quarter",
            quarter,
        )
    )


def money(*values: str) -> tuple[Decimal, ...]:
    return tuple(D(v) for v in values)


def test_two_quarters_of_the_ere_chain_add_up_to_the_hand_computed_figures(
    tmp_path: Path, data_dir: Path
) -> None:
    admin_port = free_port()
    roles = Roles(
        tmp_path / "proxy.toml",
        free_port(),
        admin_port,
        free_port(),
        free_port(),
        tmp_path / "run.stderr",
    )
    template = CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    template += (
        f'\n[database]\ndata_dir = "{data_dir}"\n'
        f"\n[ere]\nworkers = 1\nadmin_port = {roles.worker_admin}\npoll_interval = 0.2\n"
        'referral_step = "0.05"\npayout_minimum = "1.00"\n'
        f'payout_dir = "{tmp_path / "payouts"}"\nstatement_dir = "{tmp_path / "statements"}"\n'
        'debtor_name = "ERE Provider BV"\ndebtor_iban = "NL91ABNA0417164300"\n'
        'debtor_bic = "ABNANL2A"\nprovider_name = "ERE Provider BV"\n'
        'provider_address = "Stationsplein 1, 3511 ED Utrecht"\nprovider_kvk = "12345678"\n'
        'provider_vat_number = "NL123456789B01"\nprovider_nea_account = "NEA-000123"\n'
    )
    roles.config.write_text(
        template.format(
            port=roles.port, admin_port=roles.admin_port, upstream_port=roles.upstream_port
        )
    )
    run_the_chain(roles, data_dir, tmp_path)
    assert log_problems(roles.log.read_text()) == []


def run_the_chain(roles: Roles, data_dir: Path, tmp_path: Path) -> None:
    # -- 1 April: a partner enrols four customers; Anna refers the other three.
    with roles.on("2026-04-01 08:00:00") as op:
        op.run("partners", "add", "P1", "--name", "Installer One", "--kind", "installer",
               "--payout-model", "direct")  # fmt: skip
        signed = tmp_path / "mandate.pdf"
        signed.write_bytes(b"%PDF-1.4 signed mandate\n")
        code = None
        for customer in ("ANNA", "BRAM", "CARLA", "DIRK"):
            referral = ["--referral-code", code] if code else []
            op.run("customers", "add", customer, "--partner", "P1", "--name", customer.title(),
                   "--address", "Kerkstraat 1", "--postcode", "1234 AB", "--city", "Utrecht",
                   "--ean", EANS[customer], "--grid-operator", "Stedin",
                   "--iban", "NL91ABNA0417164300", "--email", f"{customer.lower()}@example.nl",
                   *referral)  # fmt: skip
            op.run("mandates", "add", "--ean", EANS[customer], "--year", "2026",
                   "--issued-on", "2026-04-01", "--consent-by", customer.title(),
                   "--consent-at", "2026-04-01T07:30:00+00:00", "--consent-method",
                   "online-checkbox", "--consent-text-version", "v3", "--document", str(signed))  # fmt: skip
            op.run("links", "add", f"CP-{customer}", "--customer", customer,
                   "--max-power-w", "11000", "--from", "2026-04-01T00:00:00+02:00")  # fmt: skip
            if code is None:
                code = json.loads(op.run("referrals", "show", "ANNA", "--json"))["code"]
        op.run("links", "add", "CP-MOVE", "--customer", "BRAM", "--max-power-w", "11000",
               "--from", "2026-04-01T00:00:00+02:00")  # fmt: skip
        mandate = json.loads(op.run("mandates", "show", "--ean", EANS["ANNA"], "--year", "2026",
                                    "--json"))  # fmt: skip
        assert mandate["channel"] == "cli" and mandate["consent_text_version"] == "v3"
        assert len(mandate["document_sha256"]) == 64 and mandate["backdated"] is False

    # -- Q2's sessions reach us in June, from the chargers' queues; Q2 cannot close before it ends.
    with roles.on("2026-06-15 20:00:00") as op:
        asyncio.run(charge(roles, [
            ("CP-ANNA", "2026-05-20T08:00:00+00:00", "42.37"),
            ("CP-BRAM", "2026-05-21T08:00:00+00:00", "10"),
            ("CP-CARLA", "2026-05-22T08:00:00+00:00", "20"),
        ]))  # fmt: skip
        wait_for_sessions(data_dir, 3)
        received = asyncio.run(query(data_dir, "SELECT DISTINCT (stop_received_at AT TIME ZONE 'UTC')::date::text FROM sessions"))  # fmt: skip
        assert received == [("2026-06-15",)]  # the proxy's clock: the day the frames arrived
        assert "not ended yet" in op.run("quarter", "close", "2026Q2", expect=2)

    # -- 10 July: Q2 closes and is paid out; then a June session arrives late, and one of July.
    with roles.on("2026-07-10 09:00:00") as op:
        op.run("quarter", "close", "2026Q2", "--wait")
        assert lines(data_dir, "2026Q2") == [
            ("ANNA", "2026Q2", "regular", D("42.37"), *money("14.10", "0.30", "4.23", "0.10", "0.42", "0.07", "3.81"), 2),
            ("BRAM", "2026Q2", "regular", D("10"), *money("3.33", "0.30", "1.00", "0.20", "0.20", "0.03", "0.80"), 0),
            ("CARLA", "2026Q2", "regular", D("20"), *money("6.65", "0.30", "2.00", "0.20", "0.40", "0.07", "1.60"), 0),
        ]  # fmt: skip
        op.run("payout", "run", "2026Q2", "--wait")
        assert transfers(data_dir, "2026Q2") == [("ANNA", D("3.81")), ("CARLA", D("1.60"))]
        assert carried(data_dir, "2026Q2") == [("BRAM", D("0.80"))]
        asyncio.run(charge(roles, [
            ("CP-ANNA", "2026-06-20T08:00:00+00:00", "5"),  # Q2, after Q2's payout
            ("CP-ANNA", "2026-07-08T08:00:00+00:00", "30"),
        ]))  # fmt: skip
        wait_for_sessions(data_dir, 5)

    # -- 15 August: the meter box CP-MOVE goes from Bram to Carla; Bram's and Dirk's sessions.
    with roles.on("2026-08-15 09:00:00") as op:
        op.run("links", "move", "CP-MOVE", "--to-customer", "CARLA", "--at",
               "2026-08-15T00:00:00+02:00", "--reason", "sold with the house")  # fmt: skip
        refused = op.run("links", "end", "CP-ANNA", "--at", "2026-06-01T00:00:00+02:00",
                         "--reason", "backdated", expect=2)  # fmt: skip
        assert "closed quarter 2026Q2" in refused
        asyncio.run(charge(roles, [
            ("CP-MOVE", "2026-08-01T08:00:00+00:00", "8"),  # Bram's
            ("CP-DIRK", "2026-07-20T08:00:00+00:00", "6"),
        ]))  # fmt: skip
        wait_for_sessions(data_dir, 7)

    # -- 10 September: Carla's mandate ends; her session on CP-MOVE of 20 August arrives.
    with roles.on("2026-09-10 10:00:00") as op:
        op.run("mandates", "revoke", "--ean", EANS["CARLA"], "--year", "2026", "--reason",
               "moved out", "--effective", "2026-09-10")  # fmt: skip
        asyncio.run(charge(roles, [("CP-MOVE", "2026-08-20T08:00:00+00:00", "12")]))
        wait_for_sessions(data_dir, 8)

    # -- 20 September: Carla charges at home after her mandate ended.
    with roles.on("2026-09-20 12:00:00"):
        asyncio.run(charge(roles, [("CP-CARLA", "2026-09-15T08:00:00+00:00", "7")]))
        wait_for_sessions(data_dir, 9)

    # -- 10 October: Q3 closes and is paid out; the future cannot close; the year is open.
    with roles.on("2026-10-10 09:00:00") as op:
        for future in ("2026Q4", "2062Q3"):
            assert "not ended yet" in op.run("quarter", "close", future, expect=2)
        op.run("quarter", "close", "2026Q3", "--wait")
        assert lines(data_dir, "2026Q2")[0][3] == D("42.37")  # the closed quarter is as it was
        assert lines(data_dir, "2026Q3") == [
            ("ANNA", "2026Q2", "adjustment", D("5"), *money("1.66", "0.30", "0.50", "0.10", "0.05", "0.01", "0.45"), 3),
            ("ANNA", "2026Q3", "regular", D("30"), *money("9.98", "0.30", "2.99", "0.10", "0.30", "0.05", "2.69"), 3),
            ("BRAM", "2026Q3", "regular", D("8"), *money("2.66", "0.30", "0.80", "0.20", "0.16", "0.03", "0.64"), 0),
            ("CARLA", "2026Q3", "regular", D("12"), *money("3.99", "0.30", "1.20", "0.20", "0.24", "0.04", "0.96"), 0),
            ("DIRK", "2026Q3", "regular", D("6"), *money("2.00", "0.30", "0.60", "0.20", "0.12", "0.02", "0.48"), 0),
        ]  # fmt: skip
        excluded = asyncio.run(query(data_dir, """
            SELECT s.identity, a.quarter, a.reason FROM session_assessments a
            JOIN sessions s USING (session_id) WHERE a.eligibility = 'ineligible' ORDER BY 1, 2"""))  # fmt: skip
        assert excluded == [("CP-CARLA", "2026Q3", "no-valid-mandate")]
        op.run("payout", "run", "2026Q3", "--wait")
        assert transfers(data_dir, "2026Q3") == [("ANNA", D("3.14")), ("BRAM", D("1.44"))]
        assert carried(data_dir, "2026Q3") == [("CARLA", D("0.96")), ("DIRK", D("0.48"))]
        anna = statement(tmp_path, "2026Q3", "ANNA")
        assert (
            "correctie van 2026Q2: 5,000 kWh 1,66 ERE € 0,30 per ERE € 0,50 vergoeding 10% (20% min"
            " 3 actieve doorverwijzingen × 5%, minimaal 10%) € -0,05 netto € 0,45 sessie" in anna
        )
        assert "Netto: € 3,14 Uitbetaald: € 3,14" in anna
        # Q2's run invoiced Anna, Bram and Carla: the series goes on without a gap.
        assert "Factuur ERE-2026-000004 voor onze vergoeding" in anna and "KvK: 12345678" in anna
        assert "Vergoeding excl. btw: € 0,29 Btw 21%: € 0,06 Vergoeding incl. btw: € 0,35" in anna
        assert "0,96" in statement(tmp_path, "2026Q3", "CARLA")  # carried over, and told so
        excluded_id = asyncio.run(query(data_dir, "SELECT session_id FROM sessions WHERE"
                                        " identity = 'CP-CARLA' AND started_at > '2026-09-01'"))  # fmt: skip
        shown = op.run("sessions", "show", str(excluded_id[0][0]))
        assert "no-valid-mandate" in shown and "2026Q3" in shown
        rev = str(tmp_path / "rev")
        assert "2026Q4" in op.run("rev", "export", "2026", "--out", rev, expect=2)
        op.run("rev", "export", "2026", "--draft", "--out", rev)
        assert any("DRAFT" in path.name.upper() for path in (tmp_path / "rev").iterdir())


def statement(tmp_path: Path, quarter: str, customer: str) -> str:
    """The plain text of a customer's statement, on one line."""
    raw = (tmp_path / "statements" / f"{quarter}-{customer}.eml").read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    assert body is not None
    return " ".join(body.get_content().split())


def transfers(data_dir: Path, quarter: str) -> list[tuple]:
    return asyncio.run(
        query(
            data_dir,
            "SELECT t.payee_id, t.amount FROM payout_transfers t JOIN payout_runs r USING (run_id)"
            " WHERE r.quarter = $1 ORDER BY 1",
            quarter,
        )
    )


def carried(data_dir: Path, quarter: str) -> list[tuple]:
    return asyncio.run(
        query(
            data_dir,
            "SELECT o.customer_id, o.amount FROM payout_carry_overs o JOIN payout_runs r USING (run_id)"
            " WHERE r.quarter = $1 ORDER BY 1",
            quarter,
        )
    )
