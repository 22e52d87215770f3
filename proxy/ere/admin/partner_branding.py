"""Changing a partner's white label: its branding (`partners.branding`) and statement language.

`BrandingChange.from_args` checks what `ere-proxy partners brand` was given, field by field,
before any database is opened: free text as `proxy.ere.admin.validation.clean_text` allows it
(the intro, closing and footer may span lines), the sender parsed from `Name <address>`, yes/no
for `--remittance-name`, `nl`/`en` for `--language`. An empty value resets a field to its
default (`--logo ''`: no logo; `--sender ''`: the provider's sender). `set_branding` then
applies the change to the stored branding in one transaction, so the whole branding is checked
by `PartnerBranding` (colour, logo URL, sender address, lengths) before it is written.

Errors: `AdminInputError` naming the option (`--colour: brand colour must look like ...`), for
an unknown partner, or when no option was given; the row is then left as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import Any

from proxy.ere.admin.new_records import statement_language
from proxy.ere.admin.validation import AdminInputError, choice, clean_text, one_line, validate_id
from proxy.ere.core.branding import (
    MAX_NAME_CHARS,
    MAX_PARAGRAPH_CHARS,
    BrandingError,
    PartnerBranding,
    parse_sender,
)
from proxy.store.connection import Connection

__all__ = ["OPTIONS", "BrandingChange", "set_branding"]

# The option of each `PartnerBranding` field (and of the sender as a whole).
OPTIONS = {
    "display_name": "--name",
    "colour": "--colour",
    "logo_url": "--logo",
    "footer_text": "--footer",
    "sender": "--sender",
    "sender_name": "--sender",
    "sender_address": "--sender",
    "intro_nl": "--intro-nl",
    "intro_en": "--intro-en",
    "closing_nl": "--closing-nl",
    "closing_en": "--closing-en",
    "remittance_name": "--remittance-name",
}
_PARAGRAPHS = ("intro_nl", "intro_en", "closing_nl", "closing_en")
_YES_NO = {"yes": True, "no": False}


@dataclass(frozen=True, slots=True)
class BrandingChange:
    """The fields to change (`PartnerBranding` field names) and the new language, if any."""

    partner_id: str
    fields: dict[str, Any]
    language: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BrandingChange:
        """Validate `partners brand` arguments; AdminInputError names the first bad option."""
        partner_id = validate_id(args.partner_id, "partner id")
        fields: dict[str, Any] = {}
        if args.name is not None:
            fields["display_name"] = clean_text(args.name, "--name", max_chars=100)
        if args.colour is not None:
            fields["colour"] = args.colour.strip()
        if args.logo is not None:
            fields["logo_url"] = clean_text(args.logo, "--logo", max_chars=2000, required=False)
        if args.footer is not None:
            fields["footer_text"] = _paragraph(args.footer, "--footer", 2000)
        for name in _PARAGRAPHS:
            value = getattr(args, name)
            if value is not None:
                fields[name] = _paragraph(value, OPTIONS[name], MAX_PARAGRAPH_CHARS)
        if args.sender is not None:
            fields.update(_sender(args.sender))
        if args.remittance_name is not None:
            answer = choice(
                args.remittance_name.strip().lower(),
                "--remittance-name",
                ("yes", "no"),
                "yes or no",
            )
            fields["remittance_name"] = _YES_NO[answer]
        language = None if args.language is None else statement_language(args.language)
        if not fields and language is None:
            raise AdminInputError(
                "partners brand: nothing to change; give at least one of "
                f"{', '.join(sorted(set(OPTIONS.values())))}, --language"
            )
        try:  # each field on its own, so the message names its option
            for name, value in fields.items():
                PartnerBranding(**({"display_name": "check"} | {name: value}))
        except BrandingError as error:
            raise _named(error) from None
        return cls(partner_id, fields, language)


async def set_branding(conn: Connection, change: BrandingChange) -> dict[str, Any]:
    """Apply `change` to the partner's stored branding and language; returns both as stored.

    AdminInputError for an unknown partner or a branding `PartnerBranding` refuses.
    """
    async with conn.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT name, branding::text, language FROM partners WHERE partner_id = $1 FOR UPDATE",
            change.partner_id,
        )
        if row is None:
            raise AdminInputError(f"partner id: no partner {change.partner_id!r}")
        name, stored, language = row
        try:
            branding = dataclasses.replace(
                PartnerBranding.from_stored(name, stored), **change.fields
            )
        except BrandingError as error:
            raise _named(error) from None
        language = change.language or language
        await tx.execute(
            "UPDATE partners SET branding = $2::jsonb, language = $3 WHERE partner_id = $1",
            change.partner_id,
            json.dumps(asdict(branding)),
            language,
        )
    return {"branding": asdict(branding), "language": language}


def _paragraph(value: str, option: str, max_chars: int) -> str:
    return clean_text(value, option, max_chars=max_chars, required=False, multiline=True) or ""


def _sender(value: str) -> dict[str, str | None]:
    """The sender fields of `--sender`; empty: both reset (the provider's sender)."""
    if not value.strip():
        return {"sender_name": None, "sender_address": None}
    try:
        name, address = parse_sender(value)
    except BrandingError as error:
        raise _named(error) from None
    if name is not None:
        name = clean_text(name, "--sender", max_chars=MAX_NAME_CHARS)
    return {"sender_name": name, "sender_address": address}


def _named(error: BrandingError) -> AdminInputError:
    return AdminInputError(f"{OPTIONS.get(error.field, error.field)}: {one_line(str(error))}")
