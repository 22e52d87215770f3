"""A partner's white label: how its customers' statements look and read, who sends them, and
whether their payouts name the partner.

`PartnerBranding` is what `partners.branding` stores (JSON, one key per field): the display
name, a `#rrggbb` colour, an https logo, a footer, the sender of the statement e-mails
(`sender_name`, `sender_address`; default: the display name at the provider's `[ere] sender`),
an intro and a closing paragraph per language (`intro_nl`, `intro_en`, `closing_nl`,
`closing_en`) and `remittance_name`: whether payouts to the partner's customers carry its name
in the SEPA remittance information (`remittance`). `from_stored` rebuilds one from that JSON.
The language of a statement is chosen per customer and partner (the `language` columns), not
here.

Hostile input: the colour and the logo URL are refused unless they are exactly `#rrggbb` and a
plain `https://` URL, since escaping alone cannot make CSS or a URL safe; the sender is refused
with a control character (a line break would inject a header) or anything but a plain
`local@domain.tld` address. Texts are only bounded here: the renderers
(`proxy.ere.core.statement_mail`) escape them and keep nothing but their line breaks.

Errors: `BrandingError` (a `ValueError`) whose `field` names the field and whose message says
what is wrong. Pure.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from proxy.ere.core.email_address import is_plain_address
from proxy.ere.core.sepa import MAX_REMITTANCE_CHARS, SepaError, sepa_text

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_PARAGRAPH_CHARS",
    "BrandingError",
    "PartnerBranding",
    "parse_sender",
]

MAX_NAME_CHARS: Final = 200
MAX_PARAGRAPH_CHARS: Final = 1000  # an intro or closing paragraph
MAX_FOOTER_CHARS: Final = 2000
MAX_URL_CHARS: Final = 2000
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SENDER = re.compile(r'(?:"?(?P<name>[^<>"]*?)"?\s*<(?P<address>[^<>]*)>|(?P<bare>[^<>\s]+))')
_VIA = " via "


class BrandingError(ValueError):
    """A branding field that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class PartnerBranding:
    """How a partner's statements look and read, and who sends them (module docstring).

    Raises `BrandingError` for a field that could not be used safely or is too long.
    """

    display_name: str
    colour: str = "#1F6F5C"
    logo_url: str | None = None
    footer_text: str = ""
    sender_name: str | None = None
    sender_address: str | None = None
    intro_nl: str = ""
    intro_en: str = ""
    closing_nl: str = ""
    closing_en: str = ""
    remittance_name: bool = False

    def __post_init__(self) -> None:
        _bounded(self.display_name, "display_name", MAX_NAME_CHARS)
        if not isinstance(self.colour, str) or not _COLOUR.fullmatch(self.colour):
            raise BrandingError(
                "colour", f"brand colour must look like #1a2b3c, got {self.colour!r}"
            )
        if self.logo_url is not None:
            _check_logo(self.logo_url)
        _bounded(self.footer_text, "footer_text", MAX_FOOTER_CHARS)
        for name in ("intro_nl", "intro_en", "closing_nl", "closing_en"):
            _bounded(getattr(self, name), name, MAX_PARAGRAPH_CHARS)
        if self.sender_name is not None:
            _bounded(self.sender_name, "sender_name", MAX_NAME_CHARS)
            if _CONTROL.search(self.sender_name) or re.search(r'[<>"]', self.sender_name):
                raise BrandingError(
                    "sender_name",
                    f'sender name must be one line without <, > or ", got {self.sender_name!r}',
                )
        if self.sender_address is not None:
            _check_address(self.sender_address)
        if not isinstance(self.remittance_name, bool):
            raise BrandingError(
                "remittance_name",
                f"remittance_name must be true or false, got {self.remittance_name!r}",
            )

    @classmethod
    def from_stored(cls, partner_name: str, stored: Any) -> PartnerBranding:
        """The branding kept in `partners.branding` (JSON text or a mapping); the display name
        defaults to the partner's name. Keys this version does not know are ignored."""
        values = json.loads(stored) if isinstance(stored, str) else dict(stored or {})
        known = {field.name for field in dataclasses.fields(cls)}
        kept = {key: value for key, value in values.items() if key in known}
        kept["display_name"] = kept.get("display_name") or partner_name
        return cls(**kept)

    def intro(self, language: str) -> str:
        """The intro paragraph in `language` (empty: none)."""
        return self.intro_en if language == "en" else self.intro_nl

    def closing(self, language: str) -> str:
        """The closing paragraph in `language` (empty: none)."""
        return self.closing_en if language == "en" else self.closing_nl

    def remittance(self, base: str) -> str:
        """The remittance information of a payout to one of the partner's customers.

        `base` itself unless `remittance_name` is set; then `<base> via <display name>` in the
        SEPA character set, the name shortened so the whole stays within the 140 characters of
        the field and `base` is never cut. `base` also when the name has nothing SEPA can carry
        or there is no room left for it.
        """
        if not self.remittance_name:
            return base
        try:
            head = sepa_text(base, MAX_REMITTANCE_CHARS, "remittance")
            name = sepa_text(self.display_name, MAX_REMITTANCE_CHARS, "partner name")
        except SepaError:
            return base
        room = max(0, MAX_REMITTANCE_CHARS - len(head) - len(_VIA))
        name = name[:room].rstrip()
        if not any(character.isalnum() for character in name):
            return base
        return f"{head}{_VIA}{name}"


def parse_sender(text: str) -> tuple[str | None, str]:
    """`Name <local@domain.tld>` (the name may be quoted) or a bare address, as (name or None,
    address). Raises `BrandingError` for `sender` when it is neither or has a control character
    (a line break would start another header); the parts are checked by `PartnerBranding`."""
    if _CONTROL.search(text):
        raise BrandingError(
            "sender", "sender must be one line: line breaks and control characters are refused"
        )
    match = _SENDER.fullmatch(text.strip())
    if match is None:
        raise BrandingError(
            "sender", f"sender must look like 'Name <statements@example.nl>', got {text!r}"
        )
    if match["bare"] is not None:
        return None, match["bare"]
    return (match["name"].strip() or None), match["address"].strip()


def _bounded(value: object, field: str, max_chars: int) -> None:
    if not isinstance(value, str):
        raise BrandingError(field, f"{field} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise BrandingError(field, f"{field} is too long: at most {max_chars} characters")


def _check_logo(url: object) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if (
        parts is None
        or parts.scheme != "https"
        or not parts.netloc
        or len(str(url)) > MAX_URL_CHARS
        or re.search(r"[\s\x00-\x1f\x7f]", str(url))
    ):
        raise BrandingError(
            "logo_url", f"logo URL must be an https:// URL without spaces, got {url!r}"
        )


def _check_address(address: object) -> None:
    """A plain `local@domain.tld`: nothing a header could be injected through."""
    if not isinstance(address, str) or not is_plain_address(address):
        raise BrandingError(
            "sender_address",
            f"sender address must be a plain address like statements@example.nl, got {address!r}",
        )
