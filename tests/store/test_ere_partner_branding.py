"""`ere-proxy partners brand` and `--language` on `partners add` / `customers add`, against a real
(embedded) PostgreSQL: what is stored, and hostile or bad values refused naming the option with
the tables left as they were."""

from __future__ import annotations

import pytest

from proxy.runtime.config import DatabaseSettings
from testkit.ere_admin import EAN_2, EAN_3, Admin, customer_args, partner_args, refused


@pytest.fixture
def run(settings: DatabaseSettings) -> Admin:
    return Admin(settings)


@pytest.fixture
async def acme(run: Admin) -> Admin:
    await run.ok(*partner_args())
    return run


async def test_brand_sets_the_given_fields_and_keeps_the_others(acme: Admin) -> None:
    shown = await acme.json(
        "partners",
        "brand",
        "acme",
        "--name",
        "Acme Energie",
        "--colour",
        "#12aB34",
        "--logo",
        "https://acme.example/logo.png",
        "--sender",
        "Acme Afrekeningen <afrekening@acme.example>",
        "--intro-nl",
        "Hier is uw overzicht.\nVragen? Bel ons.",
        "--intro-en",
        "Here is your statement.",
        "--closing-nl",
        "Groet, Acme",
        "--remittance-name",
        "yes",
        "--language",
        "en",
    )
    assert shown == {
        "partner_id": "acme",
        "language": "en",
        "display_name": "Acme Energie",
        "colour": "#12aB34",
        "logo_url": "https://acme.example/logo.png",
        "footer_text": "",
        "sender_name": "Acme Afrekeningen",
        "sender_address": "afrekening@acme.example",
        "intro_nl": "Hier is uw overzicht.\nVragen? Bel ons.",
        "intro_en": "Here is your statement.",
        "closing_nl": "Groet, Acme",
        "closing_en": "",
        "remittance_name": True,
    }
    again = await acme.json("partners", "brand", "acme", "--remittance-name", "NO")
    assert again == shown | {"remittance_name": False}
    stored = await acme.json("partners", "show", "acme")
    assert stored["language"] == "en"
    assert stored["branding"] == {
        k: v for k, v in again.items() if k not in ("partner_id", "language")
    }


async def test_an_empty_value_resets_a_field_to_its_default(acme: Admin) -> None:
    await acme.ok(
        "partners",
        "brand",
        "acme",
        "--logo",
        "https://acme.example/logo.png",
        "--sender",
        "afrekening@acme.example",
        "--intro-nl",
        "Hallo",
    )
    shown = await acme.json(
        "partners", "brand", "acme", "--logo", "", "--sender", "", "--intro-nl", ""
    )
    assert (
        shown["logo_url"],
        shown["sender_name"],
        shown["sender_address"],
        shown["intro_nl"],
    ) == (
        None,
        None,
        None,
        "",
    )
    human = await acme.ok("partners", "brand", "acme", "--language", "nl")
    assert "display_name:" in human and "Acme Laadpalen B.V." in human


async def test_html_in_a_statement_text_is_kept_as_text(acme: Admin) -> None:
    """Stored as given; the statement escapes it (tested with the rendering)."""
    shown = await acme.json("partners", "brand", "acme", "--intro-nl", "<b>Welkom</b> & meer")
    assert shown["intro_nl"] == "<b>Welkom</b> & meer"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--colour", "#fff;background:url(https://evil.example/x)", "--colour: brand colour"),
        ("--colour", "red", "--colour: brand colour must look like #1a2b3c"),
        ("--logo", "javascript:alert(1)", "--logo: logo URL must be an https:// URL"),
        ("--logo", "http://acme.example/logo.png", "--logo: logo URL"),
        ("--logo", "https://acme.example/a b.png", "--logo: logo URL"),
        ("--logo", "https://acme.example/\x00.png", "--logo: "),
        (
            "--sender",
            "Acme <a@acme.example>\r\nBcc: victim@example.nl",
            "--sender: sender must be one line",
        ),
        (
            "--sender",
            "Acme\nBcc: victim@example.nl <a@acme.example>",
            "--sender: sender must be one line",
        ),
        ("--sender", "Acme <not-an-address>", "--sender: sender address must be a plain address"),
        ("--sender", "Acme <a@acme.example", "--sender: sender must look like"),
        ("--sender", 'Ac"me <a@acme.example>', "--sender: "),
        ("--intro-nl", "x" * 1001, "--intro-nl: "),
        ("--closing-en", "bad\x1b[31m", "--closing-en: "),
        ("--name", "", "--name: must not be empty"),
        ("--name", "Acme\u202eevil", "--name: "),
        ("--remittance-name", "maybe", "--remittance-name: 'maybe' is not yes or no"),
        ("--language", "de", "--language: 'de' is not a statement language; use one of nl, en"),
    ],
)
async def test_bad_branding_is_refused_naming_the_option(
    acme: Admin, settings: DatabaseSettings, option: str, value: str, expected: str
) -> None:
    await refused(acme, settings, ("partners", "brand", "acme", option, value), expected)


async def test_brand_needs_a_known_partner_and_something_to_change(
    acme: Admin, settings: DatabaseSettings
) -> None:
    await refused(
        acme,
        settings,
        ("partners", "brand", "nobody", "--colour", "#000000"),
        "partner id: no partner 'nobody'",
    )
    await refused(acme, settings, ("partners", "brand", "acme"), "nothing to change", "--language")


async def test_the_language_of_partners_and_customers(
    run: Admin, settings: DatabaseSettings
) -> None:
    await run.ok(*partner_args("acme"))
    await run.ok(*partner_args("volt", "--language", "EN"))
    assert (await run.json("partners", "show", "acme"))["language"] == "nl"
    assert (await run.json("partners", "show", "volt"))["language"] == "en"
    await run.ok(*customer_args("c-1"))
    await run.ok(*customer_args("c-2", "--language", "en", ean_code=EAN_2))
    assert (await run.json("customers", "show", "c-1"))["language"] is None  # the partner's
    assert (await run.json("customers", "show", "c-2"))["language"] == "en"
    await refused(
        run,
        settings,
        customer_args("c-3", "--language", "fr", ean_code=EAN_3),
        "--language: 'fr' is not a statement language",
    )
    await refused(run, settings, partner_args("x", "--language", "nl-NL"), "--language: ")
