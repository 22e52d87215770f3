"""`ere-proxy partners brand PARTNER [options]`: a partner's white label, from the shell.

Sets what the partner's customers' statements show and how they are sent: `--name` (display
name), `--colour '#rrggbb'`, `--logo https://...`, `--footer`, `--sender 'Name <address>'` (the
From of the statement e-mails; default the provider's `[ere] sender`), `--intro-nl`,
`--intro-en`, `--closing-nl`, `--closing-en` (paragraphs before the sessions and after the
figures, in the statement's language), `--remittance-name yes|no` (payouts to its customers name
the partner in the SEPA remittance information) and `--language nl|en` (of statements, unless a
customer chose their own). Options not given keep their value; an empty value resets one to its
default. Prints the branding as stored (`--json`: as JSON).

Checks and errors: `proxy.ere.admin.partner_branding`; the command runs inside
`proxy.ere.admin.records_cli`, so a refused value prints one line naming the option and exits 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from proxy.ere.admin.partner_branding import BrandingChange, set_branding
from proxy.ere.admin.records_output import Output
from proxy.ere.core.statement_texts import LANGUAGES
from proxy.store.connection import Connection

__all__ = ["add_branding_parser", "brand_partner"]


def add_branding_parser(partner_actions: Any, common: argparse.ArgumentParser) -> None:
    """`brand` under the `partners` command."""
    brand = partner_actions.add_parser(
        "brand", parents=[common], help="set a partner's branding and statement language"
    )
    brand.add_argument("partner_id")
    brand.add_argument("--name", help="display name on statements and e-mails")
    brand.add_argument("--colour", help="brand colour, #rrggbb")
    brand.add_argument("--logo", help="https:// URL of the logo ('' for none)")
    brand.add_argument("--footer", help="footer text of statements (may span lines)")
    brand.add_argument(
        "--sender", help="From of statement e-mails, 'Name <address>' ('' for the provider's)"
    )
    for language in LANGUAGES:
        brand.add_argument(
            f"--intro-{language}",
            dest=f"intro_{language}",
            help=f"paragraph opening a statement in {language} (may span lines)",
        )
        brand.add_argument(
            f"--closing-{language}",
            dest=f"closing_{language}",
            help=f"paragraph closing a statement in {language} (may span lines)",
        )
    brand.add_argument(
        "--remittance-name",
        metavar="{yes,no}",
        help="name the partner in the remittance information of its customers' payouts",
    )
    brand.add_argument(
        "--language", metavar="{nl,en}", help="language of its customers' statements"
    )
    brand.add_argument("--json", action="store_true")


async def brand_partner(db: Connection, change: BrandingChange, out: Output) -> None:
    """Apply `change` and print the partner's branding and language as stored."""
    stored = await set_branding(db, change)
    shown = {"partner_id": change.partner_id, "language": stored["language"]} | stored["branding"]
    out.json_or(shown, lambda: out.fields(shown))
