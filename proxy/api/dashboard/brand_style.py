"""A partner's brand colour as the dashboard's style sheet, readable whatever the colour (pure).

The header is painted in the brand colour with the ink (black or white) that contrasts
with it most; links and accents use the brand colour darkened (mixed with black) until it has
a contrast of at least 4.5:1 on white, the WCAG AA level for text. Contrast is WCAG 2's:
(L1 + 0.05) / (L2 + 0.05) of the colours' relative luminances. The colour is a validated
`#rrggbb` (`proxy.ere.core.branding.PartnerBranding`); anything else is a ValueError.
"""

from __future__ import annotations

import re

__all__ = ["TEXT_CONTRAST", "brand_css", "contrast", "on_white", "readable_ink"]

TEXT_CONTRAST = 4.5
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
_DARK_INK, _LIGHT_INK = "#000000", "#ffffff"


def _rgb(colour: str) -> tuple[int, int, int]:
    if not _COLOUR.fullmatch(colour):
        raise ValueError(f"a colour is #rrggbb, got {colour!r}")
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _luminance(colour: str) -> float:
    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    """The WCAG contrast ratio of two colours (1 to 21)."""
    light, dark = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def readable_ink(background: str) -> str:
    """Black or white, whichever contrasts more with `background` (at least 4.58:1 for any
    colour, so always TEXT_CONTRAST)."""
    dark, light = contrast(background, _DARK_INK), contrast(background, _LIGHT_INK)
    return _DARK_INK if dark >= light else _LIGHT_INK


def on_white(colour: str) -> str:
    """`colour`, darkened just enough to read as text on white (at least TEXT_CONTRAST)."""
    r, g, b = _rgb(colour)
    for step in range(21):
        keep = 1 - step / 20
        shade = f"#{round(r * keep):02x}{round(g * keep):02x}{round(b * keep):02x}"
        if contrast(shade, _LIGHT_INK) >= TEXT_CONTRAST:
            return shade
    return "#000000"


def brand_css(colour: str) -> str:
    """The style sheet that gives the dashboard a partner's colour."""
    colour = colour.lower()
    return (
        ":root {\n"
        f"  --brand: {colour};\n"
        f"  --brand-ink: {readable_ink(colour)};\n"
        f"  --brand-text: {on_white(colour)};\n"
        "}\n"
    )
