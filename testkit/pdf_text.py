"""The text a PDF shows, for tests: the strings of its content streams' `Tj` operators,
inflated where a stream is compressed, decoded as the built-in fonts' Windows-1252."""

from __future__ import annotations

import re
import zlib

__all__ = ["pdf_text"]

_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
_SHOWN = re.compile(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", re.S)


def pdf_text(pdf: bytes) -> str:
    """Every shown string, one per line, in the order the streams hold them."""
    shown = []
    for stream in _STREAM.findall(pdf):
        try:
            stream = zlib.decompress(stream)
        except zlib.error:
            pass
        for text in _SHOWN.findall(stream):
            shown.append(re.sub(rb"\\(.)", rb"\1", text, flags=re.S).decode("cp1252"))
    return "\n".join(shown)
