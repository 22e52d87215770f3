"""How a value from a file shows in a report: as data, never as something that acts.

A report of bad rows names what it found in them, and is read in a terminal, as JSON or as a
CSV file opened in a spreadsheet. `shown(value)` makes any cell safe for all three: at most
`MAX_SHOWN_CHARS` characters (the length of the rest is given), control and invisible
characters as escapes (no terminal escape sequence gets through), all of it in single quotes: a
cell a spreadsheet would take for a formula (starting with `=`, `+`, `-`, `@`, a tab or a
carriage return) starts with a `'` then, and shows as the text it is. `spreadsheet_safe(text)`
does the last for a whole cell of a CSV report.

Pure.
"""

from __future__ import annotations

from unicodedata import category

__all__ = ["FORMULA_STARTS", "MAX_SHOWN_CHARS", "shown", "spreadsheet_safe"]

MAX_SHOWN_CHARS = 60
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"})


def shown(value: str) -> str:
    """`value` as a report may show it (see the module docstring)."""
    text = "'" + "".join(_escaped(ch) for ch in value[:MAX_SHOWN_CHARS]) + "'"
    if len(value) > MAX_SHOWN_CHARS:
        text += f"… ({len(value)} characters)"
    return text


def _escaped(ch: str) -> str:
    if category(ch) not in _INVISIBLE:
        return ch
    code = ord(ch)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def spreadsheet_safe(text: str) -> str:
    """`text` for a cell of a CSV report: behind a `'` if a spreadsheet would take it for a
    formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
