"""`ere-proxy sessions list|show` on a real database holding sessions a real tracker captured."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from itertools import count
from pathlib import Path

import pytest
import trio

from proxy.capture.events import Event
from proxy.capture.sessions import store_events
from proxy.capture.tracker import Tracker
from proxy.cli import main as cli
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from proxy.wire.codec import text_message

_clock = count(1_790_000_000)


class Charger:
    """One charger's OCPP 1.6 traffic through a real tracker; collects the events."""

    def __init__(self, identity: str) -> None:
        self.tracker = Tracker(identity, "ocpp1.6")
        self.events: list[Event] = []
        self.ids = (f"m{n}" for n in count())

    def call(self, action: str, payload: dict, answer: dict) -> None:
        message_id = next(self.ids)
        sent = json.dumps([2, message_id, action, payload]).encode()
        self.events += self.tracker.from_charger(text_message(sent), next(_clock))
        answered = json.dumps([3, message_id, answer]).encode()
        self.events += self.tracker.from_upstream(text_message(answered), next(_clock))

    def boot(self) -> None:
        self.call(
            "BootNotification",
            {
                "chargePointVendor": "Alfen",
                "chargePointModel": "Eve",
                "meterType": "Carlo Gavazzi EM340-PF",
                "meterSerialNumber": "M-1",
            },
            {"status": "Accepted", "currentTime": "2026-07-01T00:00:00Z", "interval": 300},
        )

    def charge(self, transaction: int, start: str, meter_start: int, *readings: str) -> None:
        """A transaction; its readings are (time, kWh) samples, and a last "time=Wh" stops it."""
        self.call(
            "StartTransaction",
            {"connectorId": 1, "idTag": "TAG-1", "meterStart": meter_start, "timestamp": start},
            {"transactionId": transaction, "idTagInfo": {"status": "Accepted"}},
        )
        for reading in readings:
            at, _, value = reading.partition("=")
            if at.endswith("!"):
                stop = {"transactionId": transaction, "meterStop": int(value), "timestamp": at[:-1]}
                self.call("StopTransaction", stop | {"reason": "EVDisconnected"}, {})
                continue
            sample = {"timestamp": at, "sampledValue": [{"value": value, "unit": "kWh"}]}
            meter = {"connectorId": 1, "transactionId": transaction, "meterValue": [sample]}
            self.call("MeterValues", meter, {})


@pytest.fixture
async def captured(settings: DatabaseSettings) -> None:
    """Three sessions: CP-A's completed one and its running one (July), CP-B's of June."""
    a, b = Charger("CP-A"), Charger("CP-B")
    a.boot()
    a.charge(
        42, "2026-07-01T10:00:00Z", 1000, "2026-07-01T10:30:00Z=20.5", "2026-07-01T11:00:00Z!=43370"
    )
    a.charge(43, "2026-07-02T08:00:00Z", 43370, "2026-07-02T08:15:00Z=45.0")
    b.charge(7, "2026-06-30T20:00:00Z", 0, "2026-06-30T21:00:00Z!=11000")
    async with open_database(settings) as db:
        async with db.transaction() as conn:
            await store_events(conn, a.events + b.events)


@pytest.fixture
def config_file(tmp_path: Path, database_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cli, "setup_logging", lambda *args: None)  # keep pytest's log handlers
    path = tmp_path / "proxy.toml"
    path.write_text(f'[database]\ndsn = "{database_dsn}"\n')
    return path


@pytest.fixture
def sessions(config_file: Path, capsys: pytest.CaptureFixture[str]):
    """`ere-proxy sessions ARGS --config FILE`: (exit status, stdout, stderr)."""

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await trio.to_thread.run_sync(
            cli.main, ["sessions", *argv, "--config", str(config_file)]
        )
        out, err = capsys.readouterr()
        return code, out, err

    return run


def table(output: str) -> Iterator[dict[str, str]]:
    """The rows of a table printed by the command, by column title (titles are upper case)."""
    header, *rows = output.splitlines()
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    starts = [i for i in starts if header[i].isupper() and (i == 0 or header[i - 2 : i] == "  ")]
    titles = [header[i:j].strip() for i, j in zip(starts, [*starts[1:], None])]
    for row in rows:
        yield dict(zip(titles, (row[i:j].strip() for i, j in zip(starts, [*starts[1:], None]))))


async def test_list_shows_the_newest_sessions_first(sessions, captured) -> None:
    code, out, err = await sessions("list")
    assert (code, err) == (0, "")
    rows = list(table(out))
    assert [(r["CHARGER"], r["TRANSACTION"], r["STATUS"]) for r in rows] == [
        ("CP-A", "43", "active"),
        ("CP-A", "42", "completed"),
        ("CP-B", "7", "completed"),
    ]
    assert rows[1]["STARTED (UTC)"] == "2026-07-01 10:00:00"
    assert rows[1]["STOPPED (UTC)"] == "2026-07-01 11:00:00"
    assert (rows[1]["KWH"], rows[1]["METER CLASS"]) == ("42.37", "declared")
    assert rows[0]["STOPPED (UTC)"] == "-"

    code, out, _ = await sessions("list", "--json")
    listed = json.loads(out, parse_float=Decimal)
    assert code == 0 and [s["transaction_id"] for s in listed] == ["43", "42", "7"]
    completed = listed[1]
    assert (
        completed["energy_wh"] == Decimal(42370)
        and completed["energy_source"] == "stop_minus_start"
    )
    assert completed["started_at"].startswith("2026-07-01T10:00:00")
    assert completed["identity"] == "CP-A" and completed["connector_id"] == 1


async def test_list_filters_by_charger_status_and_period(sessions, captured) -> None:
    async def transactions(*argv: str) -> list[str]:
        code, out, err = await sessions("list", "--json", *argv)
        assert code == 0, err
        return [s["transaction_id"] for s in json.loads(out)]

    assert await transactions("--charger", "CP-B") == ["7"]
    assert await transactions("--charger", "CP-nobody") == []
    assert await transactions("--status", "active") == ["43"]
    assert await transactions("--status", "completed", "--charger", "CP-A") == ["42"]
    # --from includes, --to excludes; a date is midnight UTC; an offset is honoured
    assert await transactions("--from", "2026-07-01") == ["43", "42"]
    assert await transactions("--from", "2026-07-01", "--to", "2026-07-02") == ["42"]
    assert await transactions("--to", "2026-07-01T12:00") == ["42", "7"]
    assert await transactions("--to", "2026-07-01T12:00+02:00") == ["7"]  # 10:00 UTC, excluded
    assert await transactions("--from", "2026-07-01T10:00:00Z", "--to", "2026-07-01T10:00:01Z") == [
        "42"
    ]
    assert await transactions("--limit", "1") == ["43"]


async def test_show_gives_one_session_with_its_meter_readings(sessions, captured) -> None:
    code, out, _ = await sessions("list", "--json", "--charger", "CP-A", "--status", "completed")
    number = json.loads(out)[0]["session_id"]

    code, by_number, err = await sessions("show", str(number))
    assert (code, err) == (0, "")
    fields = dict(line.split(":", 1) for line in by_number.split("\n\n")[0].splitlines())
    fields = {key: value.strip() for key, value in fields.items()}
    assert fields["charger"] == "CP-A" and fields["transaction"] == "42"
    assert fields["status"] == "completed (EVDisconnected)"
    assert fields["energy"] == "42.37 kWh (42370 Wh, from stop_minus_start)"
    assert fields["meter class"] == "declared"
    assert fields["charger meter"] == "Alfen Eve, meter Carlo Gavazzi EM340-PF serial M-1"
    assert fields["meter start"] == "1000 Wh" and fields["meter stop"] == "43370 Wh"
    assert fields["started"] == "2026-07-01 10:00:00 UTC"
    assert fields["signed"] == "-"  # no signed readings
    samples = by_number.split("\n\n")[1]
    assert samples.splitlines()[0] == "meter samples (1):"
    [reading] = table("\n".join(samples.splitlines()[1:]))
    assert reading["MEASURAND"] == "Energy.Active.Import.Register"
    assert (reading["SAMPLES"], reading["FIRST"], reading["LAST"]) == ("1", "20500", "20500")

    code, by_transaction, _ = await sessions("show", "--charger", "CP-A", "--transaction", "42")
    assert code == 0 and by_transaction == by_number

    code, out, _ = await sessions("show", str(number), "--json")
    shown = json.loads(out, parse_float=Decimal)
    assert code == 0 and shown["session_id"] == number
    assert shown["charger_meter"]["meter_serial"] == "M-1"
    assert [(r["measurand"], r["samples"], r["last_value"]) for r in shown["readings"]] == [
        ("Energy.Active.Import.Register", 1, Decimal(20500))
    ]


async def test_unknown_sessions_and_bad_arguments_get_one_line(sessions, captured) -> None:
    assert await sessions("show", "999999") == (1, "", "ere-proxy: no session 999999\n")
    code, out, err = await sessions("show", "--charger", "CP-A", "--transaction", "9")
    assert (code, out) == (1, "") and err.count("\n") == 1 and "transaction id '9'" in err
    for wrong in (("show",), ("show", "1", "--charger", "CP-A"), ("show", "--charger", "CP-A")):
        code, out, err = await sessions(*wrong)
        assert (code, out) == (2, "") and "SESSION_ID, or --charger and --transaction" in err
    for wrong in (("list", "--from", "July"), ("list", "--limit", "0"), ("list", "--status", "x")):
        with pytest.raises(SystemExit) as exited:
            await sessions(*wrong)
        assert exited.value.code == 2


async def test_a_database_without_the_schema_is_explained(
    sessions, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await sessions("list")  # the test database is empty: never migrated
    assert (code, out) == (1, "")
    assert err.startswith("ere-proxy: the database has no sessions yet") and err.count("\n") == 1


async def test_a_data_dir_without_a_database_is_reported_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "setup_logging", lambda *args: None)
    data_dir = tmp_path / "mistyped"
    config = tmp_path / "proxy.toml"
    config.write_text(f'[database]\ndata_dir = "{data_dir}"\n')
    for command in (["sessions", "list"], ["db", "shell"]):
        code = await trio.to_thread.run_sync(cli.main, [*command, "--config", str(config)])
        out, err = capsys.readouterr()
        assert (code, out) == (1, ""), err
        assert err.startswith(f"ere-proxy: no embedded database in {data_dir}")
        assert err.count("\n") == 1
    assert not data_dir.exists()


async def _assessed_and_stated(settings: DatabaseSettings, session_id: int) -> None:
    """Two closes that looked at the session: 2026Q3 r1 counted it, r2 (after a reopen) did not."""
    async with open_database(settings) as db:
        await db.execute("""
            INSERT INTO partners (partner_id, name, kind, payout_model) VALUES ('P1', 'One', 'cpo', 'direct');
            INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator)
                VALUES ('A', 'P1', 'Anna', 'Straat 1', '1234 AB', 'Utrecht', '871687120000000011', 'Stedin');
            INSERT INTO quarter_closes (quarter, revision, state, shards) VALUES
                ('2026Q3', 1, 'reopened', 1), ('2026Q3', 2, 'closed', 1);
            INSERT INTO statement_lines (quarter, revision, customer_id, ean, delivery_quarter, kind, kwh, ere,
                                         eur_per_ere, gross, fee_rate, fee, fee_vat, net, sessions)
                VALUES ('2026Q3', 1, 'A', '871687120000000011', '2026Q3', 'regular', 42.37, 14.10, 0.30, 4.23,
                        0.20, 0.85, 0.15, 3.38, 1)""")
        await db.execute(
            "INSERT INTO statement_sessions (quarter, revision, customer_id, ean, delivery_quarter, kind,"
            " session_id, kwh) VALUES ('2026Q3', 1, 'A', '871687120000000011', '2026Q3', 'regular', $1, 42.37)",
            session_id,
        )
        history = await db.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'session_assessments' AND column_name = 'revision'"
        )
        verdicts = [
            (1, "eligible", "eligible", "", Decimal("42.37")),
            (2, "ineligible", "no-mid-evidence", "meter class declared", Decimal(0)),
        ]
        for revision, eligibility, reason, detail, kwh in verdicts if history else verdicts[1:]:
            await db.execute(
                "INSERT INTO session_assessments (session_id, quarter, eligibility, reason, detail, kwh"
                + (
                    ", revision) VALUES ($1, '2026Q3', $2, $3, $4, $5, $6)"
                    if history
                    else ") VALUES ($1, '2026Q3', $2, $3, $4, $5)"
                ),
                session_id,
                eligibility,
                reason,
                detail,
                kwh,
                *([revision] if history else []),
            )


async def test_show_gives_the_assessments_evidence_and_statement_lines_of_a_session(
    sessions, captured, settings
) -> None:
    code, out, _ = await sessions("list", "--json", "--charger", "CP-A", "--status", "completed")
    number = json.loads(out)[0]["session_id"]
    await _assessed_and_stated(settings, number)

    code, out, err = await sessions("show", str(number), "--json")
    shown = json.loads(out, parse_float=Decimal)
    assert (code, err) == (0, "")
    assert shown["evidence"] == {"meter_class": "declared", "signed_values": 0}
    assert [
        (a["quarter"], a["eligibility"], a["reason"], a["detail"], a["kwh"])
        for a in shown["assessments"]
    ][-1] == ("2026Q3", "ineligible", "no-mid-evidence", "meter class declared", Decimal(0))
    assert [
        (s["quarter"], s["revision"], s["state"], s["kind"], s["delivery_quarter"], s["kwh"])
        for s in shown["statement_lines"]
    ] == [("2026Q3", 1, "reopened", "regular", "2026Q3", Decimal("42.37"))]

    code, text, err = await sessions("show", str(number))
    assert (code, err) == (0, "")
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines())
    assert fields["signed values"].strip() == "0"
    [assessed, stated] = [
        part for part in text.split("\n\n") if part.startswith(("assessments", "statement"))
    ]
    assert assessed.splitlines()[0] == f"assessments ({len(shown['assessments'])}):"
    rows = list(table("\n".join(assessed.splitlines()[1:])))
    assert (rows[-1]["QUARTER"], rows[-1]["ELIGIBILITY"], rows[-1]["REASON"]) == (
        "2026Q3",
        "ineligible",
        "no-mid-evidence",
    )
    assert rows[-1]["DETAIL"] == "meter class declared"
    [line] = table("\n".join(stated.splitlines()[1:]))
    assert (line["QUARTER"], line["REVISION"], line["KIND"], line["KWH"]) == (
        "2026Q3",
        "1 (reopened)",
        "regular",
        "42.37",
    )


async def test_show_says_when_no_close_looked_at_a_session(sessions, captured) -> None:
    code, out, _ = await sessions("list", "--json", "--charger", "CP-B")
    number = json.loads(out)[0]["session_id"]
    code, text, err = await sessions("show", str(number))
    assert (code, err) == (0, "")
    assert "assessments: none (no close has looked at it)" in text
    assert "statement lines: none" in text
    code, out, _ = await sessions("show", str(number), "--json")
    shown = json.loads(out)
    assert shown["assessments"] == [] and shown["statement_lines"] == []
