"""The command line: hashing passwords, refusing bad configuration files."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from proxy.cli.main import main
from proxy.routing.auth import is_fast_hash, verify_password
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import describe_database


def test_hash_password_reads_one_line_of_stdin_and_prints_a_verifiable_hash(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert main(["hash-password"]) == 0
    assert verify_password("from-stdin", capsys.readouterr().out.strip())


def test_hash_password_generate_shows_a_new_password_once_and_prints_its_fast_hash(capsys):
    assert main(["hash-password", "--generate"]) == 0
    out, err = capsys.readouterr()
    password = err.removeprefix("password (shown only this once): ").strip()
    assert len(password) == 32 and password not in out
    assert is_fast_hash(out.strip()) and verify_password(password, out.strip())


def test_hash_password_never_takes_the_password_on_the_command_line(capsys, monkeypatch):
    # On argv a secret shows in `ps` and the shell's history.
    with pytest.raises(SystemExit) as exited:
        main(["hash-password", "--password", "s3cret"])
    assert exited.value.code == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["hash-password"]) == 2  # nothing on stdin: no hash of the empty password
    assert "s3cret" not in capsys.readouterr().out


@pytest.mark.parametrize("command", ["proxy", "run"])
def test_bad_config_exits_2_with_the_reason(tmp_path, capsys, command):
    path = tmp_path / "broken.toml"
    path.write_text("[proxy]\nport = 'not a number'\n")
    assert main([command, "--config", str(path)]) == 2
    assert "broken.toml" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2


def test_a_proxy_process_does_not_load_the_accounting_modules(tmp_path):
    """Each proxy worker is a process of its own: the SEPA, XML schema and IBAN modules of the
    ERE accounting (about 20 MB) stay out of it; the accounting commands still parse."""
    path = tmp_path / "broken.toml"
    path.write_text("[proxy]\nport = 'not a number'\n")
    script = (
        "import sys; from proxy.cli.main import main; import proxy.runtime.role\n"
        f"assert main(['proxy', '--config', {str(path)!r}]) == 2\n"
        "print(sorted(m for m in sys.modules if m.startswith(('proxy.ere', 'sepaxml', 'xmlschema', 'schwifty'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
    assert main(["quarter", "status", "--config", str(path)]) == 2  # known to the full parser


def test_the_start_up_log_names_a_configured_database_without_its_password():
    settings = DatabaseSettings(dsn="postgresql://ere:s3cret@db.example.com:5432/ere")
    assert describe_database(settings) == "postgresql://ere:***@db.example.com:5432/ere"
