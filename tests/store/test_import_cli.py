"""`ere-proxy import sessions` on a real PostgreSQL: a 100,000-row evcc export imported with
its progress shown, a file with bad rows reported row by row with nothing stored, dry runs,
re-imports and refusals. Counts only: no timing is asserted.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from proxy.cli.imports import import_command
from proxy.cli.main import _parser
from proxy.runtime.config import Config
from proxy.store import open_database
from testkit.ere_books import seed
from testkit.session_files import EVCC_HEADERS, evcc_export

LOADPOINTS = {"Garage": "CP-1", "Carport": "CP-2", "Oprit": "CP-3", "Werkplaats": "CP-4"}
MAP = [
    arg for name, identity in LOADPOINTS.items() for arg in ("--charger-map", f"{name}={identity}")
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def books(settings) -> None:
    async with open_database(settings) as db:
        await seed(db)
        for identity in LOADPOINTS.values():
            await db.execute(
                "INSERT INTO partner_charger_grants (identity, partner_id) VALUES ($1, 'P1')",
                identity,
            )


async def run(settings, *argv: str, stderr: io.StringIO | None = None) -> tuple[int, str, str]:
    args = _parser().parse_args(["import", "sessions", *argv])
    out, err = io.StringIO(), stderr or io.StringIO()
    code = await import_command(Config(database=settings), args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def count(settings) -> int:
    async with open_database(settings) as db:
        return int(await db.fetchval("SELECT count(*) FROM sessions WHERE source = 'csv'"))


async def test_a_100000_row_evcc_export_imports_with_its_progress_shown(settings, tmp_path):
    await books(settings)
    path = tmp_path / "evcc-sessions.csv"
    path.write_bytes(evcc_export(100_000, loadpoints=tuple(LOADPOINTS)))
    code, out, err = await run(settings, str(path), "--format", "evcc", "--partner", "P1", *MAP)
    assert code == 0, (out, err[-2000:])
    assert out == (
        "imported evcc-sessions.csv: 100000 rows: 100000 new, 0 duplicates of sessions from"
        " another source (kept as evidence, not counted), 0 imported before\n"
    )
    lines = err.splitlines()
    assert lines[0].startswith("checking: ")
    assert any(line.startswith("checking: 100,000/100,000 rows") for line in lines)
    assert any(line.startswith("storing: 100,000/100,000 rows") for line in lines)
    assert all("rows/s" in line and "ETA" in line for line in lines)
    assert await count(settings) == 100_000
    async with open_database(settings) as db:
        per_charger = await db.fetch(
            "SELECT identity, count(*), sum(energy_wh) FROM sessions GROUP BY 1 ORDER BY 1"
        )
    assert [(r[0], r[1], r[2]) for r in per_charger] == [
        (identity, 25_000, 25_000 * 7500) for identity in sorted(LOADPOINTS.values())
    ]

    # The same export again: every row imported before, nothing new.
    code, out, _ = await run(settings, str(path), "--format", "evcc", "--partner", "P1", *MAP)
    assert code == 0 and "0 new" in out and "100000 imported before" in out
    assert await count(settings) == 100_000


async def test_a_file_with_bad_rows_reports_each_one_and_stores_nothing(settings, tmp_path):
    await books(settings)
    rows = evcc_export(40, loadpoints=("Garage",)).decode().lstrip("\ufeff").splitlines()
    rows[3] = rows[3].replace("Garage", '"=HYPERLINK(""http://evil"",""x"")"')  # line 4
    rows[10] = rows[10].replace(",7.5,", ",7500,", 1)  # line 11: Wh where kWh is expected
    rows[20] = rows[20].replace("2026-", "2026/", 1)  # line 21
    rows[30] = rows[31]  # line 31 repeats line 32
    rows[35] = rows[35] + "\x00"  # line 36
    path = tmp_path / "broken.csv"
    path.write_bytes(("\n".join(rows) + "\n").encode())
    report = tmp_path / "report.csv"
    code, out, err = await run(
        settings,
        str(path),
        "--format",
        "evcc",
        "--partner",
        "P1",
        "--charger",
        "CP-1",
        "--report",
        str(report),
    )
    assert code == 2
    reported = out.splitlines()
    assert [line.split(":")[0] for line in reported] == [
        "line 11",
        "line 21",
        "line 32",
        "line 36",
    ], out
    assert "Wh where kWh is expected" in reported[0]
    assert "is not a time" in reported[1]
    assert "repeats line 31" in reported[2] or "same charging event as line 31" in reported[2]
    assert "NUL" in reported[3]
    assert "4 bad row(s) in broken.csv; nothing was imported" in err
    assert await count(settings) == 0
    with report.open(newline="") as written:
        table = list(csv.reader(written))
    assert table[0] == ["line", "column", "problem"] and len(table) == 5
    for cells in table:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)

    # Mapped by loadpoint, the formula is a loadpoint with no charger: shown as data.
    code, out, _ = await run(
        settings, str(path), "--format", "evcc", "--partner", "P1", "--charger-map", "Garage=CP-1"
    )
    assert code == 2
    line_4 = next(line for line in out.splitlines() if line.startswith("line 4:"))
    assert '\'=HYPERLINK("http://evil","x")\'' in line_4 and "\x1b" not in out
    assert await count(settings) == 0


async def test_dry_runs_refusals_and_progress_on_a_terminal(settings, tmp_path):
    await books(settings)
    path = tmp_path / "small.csv"
    path.write_bytes(evcc_export(30))
    base = (str(path), "--format", "evcc", "--partner", "P1")
    terminal = Terminal()
    code, out, _ = await run(settings, *base, "--charger", "CP-1", "--dry-run", stderr=terminal)
    assert code == 0 and out.startswith("dry run, nothing stored: 30 rows: 30 new")
    assert await count(settings) == 0
    shown = terminal.getvalue()
    assert shown.startswith("\rchecking [") and "30/30 rows" in shown and shown.endswith("\n")

    code, out, err = await run(settings, *base, "--charger", "CP-NOT-MINE")
    assert code == 2 and len(out.splitlines()) == 30
    assert out.splitlines()[0].startswith("line 2: charger 'CP-NOT-MINE' is not one of")
    assert "30 row(s) of small.csv cannot be stored" in err
    assert await count(settings) == 0

    code, _, err = await run(settings, *base[:-1], "NOBODY", "--charger", "CP-1")
    assert code == 2 and "no partner 'NOBODY'" in err
    for bad in (["--timezone", "Mars/Olympus"], ["--charger-map", "Garage"], ["--max-rows", "0"]):
        code, _, err = await run(settings, *base, "--charger", "CP-1", *bad)
        assert code == 2 and bad[0] in err
    code, _, err = await run(
        settings, str(tmp_path / "missing.csv"), *base[1:], "--charger", "CP-1"
    )
    assert code == 2 and "cannot read" in err
    header_only = tmp_path / "header.csv"
    header_only.write_text(EVCC_HEADERS["en"] + "\n")
    code, _, err = await run(settings, str(header_only), *base[1:], "--charger", "CP-1")
    assert code == 2 and "has no rows" in err

    code, out, _ = await run(settings, *base, "--charger", "CP-1")
    assert code == 0 and "30 new" in out and await count(settings) == 30


def test_the_import_command_is_in_the_parser():
    args = _parser().parse_args(
        ["import", "sessions", "f.csv", "--format", "generic", "--partner", "P1"]
    )
    assert (args.command, args.what, args.file, args.dst_fold) == (
        "import",
        "sessions",
        Path("f.csv"),
        "refuse",
    )
