"""CSV layouts and whole files: evcc's real export headers (English, German, Dutch), a CPMS's
CDR export and the generic layout; decimal commas, time zones and DST, units, and every bad
row reported with its line, quoting what it found as data."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from proxy.ingest.cells import shown, spreadsheet_safe
from proxy.ingest.csv_formats import (
    HeaderError,
    ImportOptions,
    layout_for,
    parse_charger_map,
    parse_number,
    parse_time,
)
from proxy.ingest.csv_import import check_file
from proxy.ingest.progress import Progress
from testkit.session_files import EVCC_HEADERS, evcc_export

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def options(**fields) -> ImportOptions:
    return ImportOptions(**({"partner_id": "P1", "file_name": "export.csv"} | fields))


def check(text: str, format: str = "evcc", **fields):
    return check_file(text.encode().splitlines(keepends=True), format, options(**fields), now=NOW)


def test_evcc_exports_in_english_german_and_dutch_read_alike():
    read = {}
    for language in ("en", "de", "nl"):
        data = evcc_export(5, language=language)
        result = check_file(
            data.splitlines(keepends=True), "evcc", options(charger="CP-1"), now=NOW
        )
        assert result.problems == [] and result.rows == 5, (language, result.problems)
        read[language] = result.sessions
    assert read["en"] == read["de"] == read["nl"]
    first = read["en"][0]
    assert first.energy_wh == Decimal("7500.0") and first.meter_start_wh == Decimal("1234500.0")
    assert first.source == "csv" and first.partner_id == "P1" and first.identity == "CP-1"
    assert first.source_ref == f"evcc:CP-1:{first.started_at.astimezone(UTC).isoformat()}"


def test_an_evcc_header_of_an_older_version_with_its_field_names():
    text = (
        "Created;Finished;Loadpoint;Identifier;Vehicle;Odometer (km);Meter Start (kWh);"
        "Meter Stop (kWh);Charged Energy (kWh);Charge Duration\n"
        "2026-01-10 18:00:00;2026-01-10 20:30:00;Garage;;;;100,5;112,75;12,25;2h30m0s\n"
    )
    result = check(text, chargers={"Garage": "CP-1"})
    assert result.problems == []
    (session,) = result.sessions
    assert session.energy_wh == Decimal("12250.00")
    assert (session.meter_start_wh, session.meter_stop_wh) == (
        Decimal("100500.0"),
        Decimal("112750.00"),
    )
    assert session.started_at == datetime(2026, 1, 10, 17, tzinfo=UTC)  # CET: UTC+1


def test_local_times_follow_the_time_zone_and_summer_time():
    header = EVCC_HEADERS["en"]
    text = (
        f"{header}\n"
        "2026-07-01 10:00:00,2026-07-01 11:00:00,Garage,,,,,,5,,,,,,,,\n"
        "2026-07-02 10:00:00,2026-07-02 11:00:00,Garage,,,,,,5,,,,,,,,\n"
    )
    summer = check(text, charger="CP-1").sessions[0]
    assert summer.started_at == datetime(2026, 7, 1, 8, tzinfo=UTC)
    london = check(text, charger="CP-1", timezone=ZoneInfo("Europe/London")).sessions[0]
    assert london.started_at == datetime(2026, 7, 1, 9, tzinfo=UTC)


def test_times_the_clocks_skipped_are_refused_and_times_they_passed_twice_need_a_choice():
    with pytest.raises(ValueError, match="never happened in Europe/Amsterdam"):
        parse_time("2026-03-29 02:30:00", AMSTERDAM)
    with pytest.raises(ValueError, match="happened twice"):
        parse_time("2026-10-25 02:30:00", AMSTERDAM)
    earlier = parse_time("2026-10-25 02:30:00", AMSTERDAM, "earlier")
    later = parse_time("2026-10-25 02:30:00", AMSTERDAM, "later")
    assert later.astimezone(UTC) - earlier.astimezone(UTC) == timedelta(hours=1)
    assert earlier.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    # With an offset, a time is what it says, whatever the zone.
    given = parse_time("2026-10-25T02:30:00+01:00", AMSTERDAM)
    assert given.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert parse_time("2026-10-25 01:30:00Z", AMSTERDAM) == given
    assert parse_time("2026-10-25T01:30:00.250+0000", AMSTERDAM) == given + timedelta(
        milliseconds=250
    )
    assert parse_time("2026-03-29 01:59:59", AMSTERDAM).utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "value"),
    [("12.5", "12.5"), ("12,5", "12.5"), ("0", "0"), (",5", "0.5"), ("7.", "7"), ("-1", "-1")],
)
def test_numbers_take_a_point_or_a_comma(text, value):
    assert parse_number(text) == Decimal(value)


@pytest.mark.parametrize(
    "text", ["1.234,5", "1,234.5", "1e5", "NaN", "=1+2", "12 kWh", "", "1" * 41]
)
def test_what_is_no_plain_number_is_refused(text):
    with pytest.raises(ValueError, match="is not a number"):
        parse_number(text)


def test_the_cdr_export_and_the_generic_layout():
    cdrs = (
        "CDR ID,Charge Point ID,Start Date Time,End Date Time,Total Energy (kWh),Meter Start (Wh),"
        "Meter Stop (Wh),Transaction ID,Tariff\n"
        "cdr-1,NLEFL-CP-1,2026-05-01T08:00:00Z,2026-05-01T10:00:00Z,10.5,500,11000,tx-9,x\n"
    )
    (cdr,) = check(cdrs, "eflux").sessions
    assert (cdr.source_ref, cdr.identity, cdr.transaction_id) == ("cdr-1", "NLEFL-CP-1", "tx-9")
    assert (cdr.energy_wh, cdr.meter_start_wh, cdr.meter_stop_wh) == (
        Decimal("10500.0"),
        Decimal(500),
        Decimal(11000),
    )
    generic = (
        "charger,started_at,stopped_at,energy_wh\n"
        "CP-7,2026-05-01 10:00,2026-05-01T12:00:00+02:00,9000\n"
    )
    (row,) = check(generic, "generic", file_name="mine.csv").sessions
    assert row.source_ref == "mine.csv:2" and row.energy_wh == Decimal(9000)
    assert row.started_at == row.stopped_at - timedelta(hours=2)
    with_ids = "id,charger,started_at,stopped_at,energy_kwh\nA-1,CP-7,2026-05-01 10:00,2026-05-01 11:00,3\n"
    assert check(with_ids, "generic").sessions[0].source_ref == "A-1"


@pytest.mark.parametrize(
    ("format", "header", "problem"),
    [
        ("evcc", "Created,Finished,Energy (kWh)", "no column for charger"),
        ("evcc", "Created,Created,Charging point,Energy (kWh),Finished", "more than once"),
        ("generic", "charger,started_at,stopped_at,energy_kwh,energy_wh", "energy more than once"),
        ("generic", "=cmd|' /C calc'!A0,started_at", "no column for charger"),
        ("xlsx", "a", "unknown format"),
    ],
)
def test_a_header_that_does_not_fit_is_the_one_problem(format, header, problem):
    result = check(header + "\n1,2,3\n", format)
    (found,) = result.problems
    assert found.line == 1 and problem in found.detail and result.sessions == []
    with pytest.raises(HeaderError):
        layout_for(format, header.split(","), options())


def test_every_bad_row_is_reported_with_its_line_and_nothing_else_is_lost():
    header = "id,charger,started_at,stopped_at,energy_kwh,meter_start_kwh,meter_stop_kwh"
    rows = [
        "ok-1,CP-1,2026-05-01 08:00,2026-05-01 10:00,7.5,100,107.5",  # line 2
        "bad-time,CP-1,2026-05-02 25:00,2026-05-02 26:00,7.5,,",  # 3
        '=HYPERLINK("http://x"),CP-1,2026-05-03 08:00,2026-05-03 07:00,1,,',  # 4: ends first
        "kwh-as-wh,CP-1,2026-05-04 08:00,2026-05-04 10:00,7500,,",  # 5: 7,500 kWh in 2 h
        "overlap,CP-1,2026-05-01 09:00,2026-05-01 11:00,3,,",  # 6: overlaps line 2
        "back,CP-1,2026-05-05 08:00,2026-05-05 09:00,1,90,91",  # 7: meter below 107.5
        "ok-1,CP-1,2026-05-06 08:00,2026-05-06 09:00,1,,",  # 8: id of line 2
        "dst,CP-1,2026-03-29 02:30,2026-03-29 04:00,1,,",  # 9: never happened
        "",  # 10: blank, skipped
        "future,CP-1,2026-12-24 08:00,2026-12-24 09:00,1,,",  # 11
        "short,CP-1",  # 12: cells missing
        "colon,CP:1,2026-05-07 08:00,2026-05-07 09:00,1,,",  # 13: no identity
        "neg,CP-2,2026-05-07 08:00,2026-05-07 09:00,-1,,",  # 14
        "ok-2,CP-2,2026-05-08 08:00,2026-05-08 09:00,1,,",  # 15
    ]
    result = check("\n".join([header, *rows]) + "\n", "generic")
    found = {p.line: p for p in result.problems}
    assert sorted(found) == [3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14]
    assert found[3].column == "started_at" and "not a valid date" in found[3].detail
    assert found[4].column == "stopped_at" and "after started_at" in found[4].detail
    assert found[5].column == "energy_kwh" and "Wh where kWh is expected" in found[5].detail
    assert "overlaps line 2" in found[6].detail
    assert "meter went backwards" in found[7].detail and "line 2" in found[7].detail
    assert "same id as line 2" in found[8].detail
    assert "never happened" in found[9].detail
    assert "future" in found[11].detail
    assert found[12].column == "started_at" and "empty" in found[12].detail
    assert found[13].column == "charger"
    assert "negative" in found[14].detail
    assert [s.source_ref for s in result.sessions] == ["ok-1", "ok-2"]
    assert result.rows == 13  # the blank one is no row


def test_formula_and_control_characters_are_shown_as_data():
    text = "id,charger,started_at,stopped_at,energy_kwh\nx,CP-1,=cmd|' /C calc'!A0,2026-05-01 10:00,1\n"
    (problem,) = check(text, "generic").problems
    assert problem.detail.startswith("'=cmd|")
    assert shown("\x1b[31mred\x07") == "'\\x1b[31mred\\x07'"
    assert shown("=1+2") == "'=1+2'" and shown("x" * 100).endswith("(100 characters)")
    assert spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)" and spreadsheet_safe("line 2") == "line 2"
    buffer = io.StringIO()
    csv.writer(buffer).writerow([spreadsheet_safe(str(problem)), spreadsheet_safe("-1+2")])
    assert not any(
        cell.startswith(("=", "+", "-", "@"))
        for cell in next(csv.reader(io.StringIO(buffer.getvalue())))
    )


def test_nul_bytes_bad_encoding_and_huge_cells_are_bad_rows_not_crashes():
    header = b"id,charger,started_at,stopped_at,energy_kwh\n"
    lines = [
        header,
        b"a,CP-1,2026-05-01 08:00,2026-05-01 09:00,1\n",
        b"b\x00,CP-1,2026-05-02 08:00,2026-05-02 09:00,1\n",
        b"c,CP-\xff1,2026-05-03 08:00,2026-05-03 09:00,1\n",
        b'd,CP-1,2026-05-04 08:00,2026-05-04 09:00,"1\n',
        b'2"\n',  # a quoted cell over two lines: the row starts at line 5
    ]
    result = check_file(lines, "generic", options(), now=NOW)
    found = {p.line: p.detail for p in result.problems}
    assert found[3] == "contains a NUL character"
    assert found[4].startswith("is not UTF-8")
    assert 5 in found and "not a number" in found[5]
    huge = [header, b"e,CP-1," + b"9" * 200_000 + b",2026-05-01 09:00,1\n"]
    (problem,) = check_file(huge, "generic", options(), now=NOW).problems
    assert problem.line == 2 and len(problem.detail) < 300
    assert (
        check_file([], "generic", options(), now=NOW)
        .problems[0]
        .detail.startswith("the file is empty")
    )


def test_rows_past_the_limit_end_the_file_with_a_problem():
    data = evcc_export(20)
    result = check_file(
        data.splitlines(keepends=True), "evcc", options(charger="CP-1"), now=NOW, max_rows=10
    )
    assert result.problems[-1].line == 12 and "more than 10 rows" in result.problems[-1].detail


def test_charger_maps():
    assert parse_charger_map(["Garage=CP-1", "Oprit = CP-2", "a=b=CP-3"]) == {
        "Garage": "CP-1",
        "Oprit": "CP-2",
        "a=b": "CP-3",
    }
    for bad in (["Garage"], ["=CP-1"], ["Garage="], ["G=1", "G=2"]):
        with pytest.raises(ValueError):
            parse_charger_map(bad)
    unmapped = check(evcc_export(1).decode().lstrip("\ufeff"), chargers={"Carport": "CP-9"})
    (problem,) = unmapped.problems
    assert (
        problem.column == "Charging point"
        and "no charger for the loadpoint 'Garage'" in problem.detail
    )


def test_progress_shows_rate_and_time_left_on_a_terminal_and_plain_lines_elsewhere():
    clock = [0.0]
    tty = Progress(1000, clock=lambda: clock[0], tty=True)
    assert tty.update("checking", 0).startswith("\rchecking [....")
    clock[0] = 0.05
    assert tty.update("checking", 100) is None  # too soon to redraw
    clock[0] = 1.0
    line = tty.update("checking", 250)
    assert "250/1,000 rows" in line and "250 rows/s" in line and "ETA 0:03" in line
    assert tty.finish("checking", 1000).endswith("\n")
    plain = Progress(100_000, clock=lambda: clock[0], tty=False)
    clock[0] = 10.0
    assert plain.update("storing", 0) == "storing: 0/100,000 rows  0 rows/s  ETA - (0%)"
    clock[0] = 12.0
    assert plain.update("storing", 20_000) is None
    clock[0] = 20.0
    assert plain.update("storing", 50_000) == (
        "storing: 50,000/100,000 rows  5,000 rows/s  ETA 0:10 (50%)"
    )
    assert "\r" not in plain.finish("storing", 100_000)


def test_a_time_with_an_offset_in_an_evcc_file_is_taken_as_given():
    header = EVCC_HEADERS["en"]
    text = f"{header}\n2026-10-25T02:30:00+02:00,2026-10-25T02:30:00+01:00,Garage,,,,,,5,,,,,,,,\n"
    (session,) = check(text, charger="CP-1").sessions
    assert session.stopped_at - session.started_at == timedelta(hours=1)
    assert session.started_at == datetime(2026, 10, 25, 2, 30, tzinfo=timezone(timedelta(hours=2)))
