"""A payout statement as a PDF: the statement e-mail's content on a partner-branded page.

`render_pdf` lays out the statement's plain-text rendering (`statement_mail.render_text`, so
the same content, words and number formats as the e-mail, in the same language) in a
monospaced font, under a band in the partner's colour with its display name. The logo is not
drawn: it is a URL, and a pure function fetches nothing. The document is built with fpdf2's
built-in fonts (Windows-1252, which holds €, × and the dashes the statement uses); a character
outside it is written without its accents (Ł as L) when that fits, else as `?`. Page streams
are left uncompressed (a statement is a few kilobytes), so the text can be searched as written.

Pure and deterministic: `dated` (timezone-aware) is the document's creation date, so the same
statement gives the same bytes. Errors: `ValueError` for a naive `dated` or a language
`render_text` does not know.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime

from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from proxy.ere.core.statement_mail import PartnerBranding, PayoutStatement, render_text
from proxy.ere.core.statement_texts import DEFAULT_LANGUAGE

__all__ = ["render_pdf"]

_ENCODING = "windows-1252"
_MARGIN = 15.0  # mm
_BAND = 20.0  # mm, the height of the brand band
_LINE = 4.2  # mm, one line of the body at 9 pt
# Letters without a decomposition to a base letter (NFKD leaves them whole).
_BASE_LETTERS = str.maketrans("ŁłĐđĦħı", "LlDdHhi")


def render_pdf(
    statement: PayoutStatement,
    branding: PartnerBranding,
    *,
    dated: datetime,
    language: str = DEFAULT_LANGUAGE,
) -> bytes:
    """The statement as an A4 PDF (see the module docstring)."""
    if dated.utcoffset() is None:
        raise ValueError("dated must be timezone-aware")
    text = render_text(statement, branding, language=language)
    pdf = FPDF(format="A4", unit="mm")
    pdf.core_fonts_encoding = _ENCODING
    pdf.set_compression(False)
    pdf.set_creation_date(dated)
    pdf.set_producer("ere-proxy")
    pdf.set_title(_safe(f"{branding.display_name}: {statement.period_label}"))
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(True, margin=_MARGIN)
    pdf.add_page()
    _band(pdf, branding)
    pdf.set_text_color(34, 34, 34)
    pdf.set_font("Courier", size=9)
    lines = text.splitlines()
    if lines and lines[0] == _one_line(branding.display_name):
        lines = lines[1:]  # the band shows it
    for line in lines:
        if line.strip():
            pdf.multi_cell(
                0, _LINE, _safe(line), align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )
        else:
            pdf.ln(_LINE)
    return bytes(pdf.output())


def _band(pdf: FPDF, branding: PartnerBranding) -> None:
    """A full-width band in the brand colour with the display name in readable ink."""
    red, green, blue = (int(branding.colour[i : i + 2], 16) for i in (1, 3, 5))
    pdf.set_fill_color(red, green, blue)
    pdf.rect(0, 0, pdf.w, _BAND, style="F")
    ink = 0 if _luminance(red, green, blue) > 0.179 else 255
    pdf.set_text_color(ink, ink, ink)
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.set_xy(_MARGIN, 0)
    pdf.cell(0, _BAND, _safe(_one_line(branding.display_name)))
    pdf.set_xy(_MARGIN, _BAND + 6)


def _luminance(red: int, green: int, blue: int) -> float:
    """WCAG relative luminance of a colour (0 black, 1 white)."""
    linear = [
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        for c in (red / 255, green / 255, blue / 255)
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _one_line(text: str) -> str:
    """`text` on one line, runs of white space and control characters as one space."""
    return " ".join("".join(" " if unicodedata.category(c)[0] == "C" else c for c in text).split())


def _safe(text: str) -> str:
    """`text` in what the built-in fonts can show (see the module docstring)."""
    out = []
    for char in text:
        try:
            char.encode(_ENCODING)
        except UnicodeEncodeError:
            bare = "".join(
                c
                for c in unicodedata.normalize("NFKD", char.translate(_BASE_LETTERS))
                if not unicodedata.combining(c)
            )
            try:
                bare.encode(_ENCODING)
            except UnicodeEncodeError:
                bare = "?"
            char = bare or "?"
        out.append(char)
    return "".join(out)
