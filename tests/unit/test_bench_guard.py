"""`python -m bench` refuses to measure with a debug build of the native codec."""

from __future__ import annotations

from bench.__main__ import main
from proxy import _codec


def test_a_debug_codec_build_is_refused_with_the_command_that_fixes_it(monkeypatch, capsys):
    monkeypatch.setattr(_codec, "OPTIMIZED", False)
    assert main(["fixed-load", "--quick", "--no-results"]) == 2
    assert "maturin develop --release" in capsys.readouterr().err
