"""scripts/setup is quiet unless a step fails, then it shows that step's output.

The script runs in a copy of the repository's layout whose tools print what pip and maturin
print (and fail when told to): the real installs would rebuild the shared .venv.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# python3 -m venv .venv: makes a .venv whose pip and maturin print lots, and fail on request.
PYTHON3 = f"""#!/bin/sh
[ "$1 $2" = "-m venv" ] || exec {sys.executable} "$@"
mkdir -p "$3/bin"
printf '#!/bin/sh\\nexec {sys.executable} "$@"\\n' > "$3/bin/python"
for tool in pip maturin; do
    cat > "$3/bin/$tool" <<EOF
#!/bin/sh
echo "\\$0 \\$*: working on it"
echo "warning: something $tool says on stderr" >&2
[ "\\$FAIL" = "$tool" ] && {{ echo "error: $tool could not finish" >&2; exit 3; }}
exit 0
EOF
done
chmod +x "$3/bin/"*
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The script and pyproject.toml in a directory of their own, with stub tools on PATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup", tmp_path / "scripts" / "setup")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python3").write_text(PYTHON3)
    (tools / "cargo").write_text("#!/bin/sh\nexit 0\n")
    for tool in tools.iterdir():
        tool.chmod(0o755)
    return tmp_path


def setup(checkout: Path, fail: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(checkout / "scripts" / "setup")],
        env={"PATH": f"{checkout / 'tools'}:/usr/bin:/bin", "FAIL": fail},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_setup_that_succeeds_prints_nothing_and_keeps_the_output_in_a_log(checkout: Path):
    result = setup(checkout)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    log = (checkout / ".venv" / "setup.log").read_text()
    assert "something pip says" in log and "something maturin says" in log
    assert "install -r .venv/requirements.txt" in log
    assert "msgspec" in (checkout / ".venv" / "requirements.txt").read_text()


@pytest.mark.parametrize("failing", ["pip", "maturin"])
def test_a_failing_step_shows_its_output_and_fails_the_setup(checkout: Path, failing: str):
    result = setup(checkout, fail=failing)
    assert result.returncode == 3 and result.stdout == ""
    assert f"error: {failing} could not finish" in result.stderr
    assert f"warning: something {failing} says on stderr" in result.stderr
    assert "failed (exit status 3); its output, also in .venv/setup.log:" in result.stderr
    if failing == "maturin":  # the steps that went well stay in the log only
        assert "pip" not in result.stderr
