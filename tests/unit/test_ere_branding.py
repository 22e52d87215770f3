"""A partner's white label: hostile branding refused or escaped, the sender, the statement
texts per language, and the partner's name in its customers' remittance information."""

from __future__ import annotations

import email
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from email import policy

import pytest
from lxml import html as lxml_html  # type: ignore[import-untyped]

from proxy.ere.core.branding import BrandingError, PartnerBranding, parse_sender
from proxy.ere.core.payout_plan import (
    CustomerBalance,
    PartnerPayout,
    PayoutModel,
    plan_payouts,
)
from proxy.ere.core.sepa import MAX_REMITTANCE_CHARS, BankAccount
from proxy.ere.core.statement_mail import (
    PayoutStatement,
    PricingBasis,
    StatementLine,
    build_statement_message,
    render_html,
    render_text,
)

BRAND = PartnerBranding(
    "Acme Energie",
    intro_nl="Hier is uw overzicht.",
    intro_en="Here is your statement.",
    closing_nl="Met vriendelijke groet,\nAcme Energie",
    closing_en="Kind regards,\nAcme Energie",
)
STATEMENT = PayoutStatement(
    statement_id="2026Q2-c-1",
    customer_name="Jan de Vries",
    customer_email="jan@example.nl",
    period_label="2026Q2",
    sessions=(StatementLine(date(2026, 6, 25), Decimal("42.37")),),
    ere=Decimal("14.10"),
    unit_price=Decimal("0.30"),
    pricing_basis=PricingBasis.PER_ERE,
    gross=Decimal("4.23"),
    fee=Decimal("0.85"),
    fee_vat=Decimal("0.15"),
    net=Decimal("3.38"),
)
DATED = datetime(2026, 7, 20, 9, tzinfo=UTC)


def refused_field(**fields: object) -> str:
    with pytest.raises(BrandingError) as caught:
        PartnerBranding("Acme", **fields)  # type: ignore[arg-type]
    return caught.value.field


# --- hostile branding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "colour",
    [
        "#fff;background:url(https://evil.example/x)",
        "red",
        "expression(alert(1))",
        "#12345g",
        "#123456;",
        "#123456\n",
        " #123456",
    ],
)
def test_a_colour_that_could_carry_css_is_refused(colour: str) -> None:
    assert refused_field(colour=colour) == "colour"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "http://cdn.example/logo.png",
        "//evil.example/logo.png",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "https://cdn.example/a b.png",
        "https://cdn.example/a.png\nx",
        "https://",
        "https://cdn.example/" + "a" * 2000,
    ],
)
def test_a_logo_that_is_not_a_plain_https_url_is_refused(url: str) -> None:
    assert refused_field(logo_url=url) == "logo_url"


def test_an_https_logo_with_quotes_stays_inside_its_attribute() -> None:
    logo = 'https://cdn.example/l.png?a="><script>alert(1)</script>'
    page = lxml_html.fromstring(render_html(STATEMENT, replace(BRAND, logo_url=logo)))
    assert page.xpath("//script") == [] and page.xpath("//img/@src") == [logo]


def test_html_in_the_statement_texts_is_escaped_and_only_line_breaks_kept() -> None:
    hostile = replace(
        BRAND,
        intro_nl='<script>alert(1)</script>\n<a href="javascript:x">klik</a>',
        closing_nl="</p><iframe src=x></iframe>",
    )
    page = lxml_html.fromstring(render_html(STATEMENT, hostile))
    assert page.xpath("//script | //iframe | //a") == []
    assert '<script>alert(1)</script>\n<a href="javascript:x">klik</a>' in "\n".join(
        page.xpath("//p/text()")
    )
    assert "</p><iframe src=x></iframe>" in page.text_content()
    text = render_text(STATEMENT, replace(BRAND, intro_nl="a\r\nUitbetaald: € 1.000,00\x00"))
    assert "\x00" not in text and "\r" not in text


@pytest.mark.parametrize("field", ["intro_nl", "intro_en", "closing_nl", "closing_en"])
def test_statement_texts_are_bounded(field: str) -> None:
    PartnerBranding("Acme", **{field: "x" * 1000})  # type: ignore[arg-type]
    assert refused_field(**{field: "x" * 1001}) == field


# --- the sender ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("Acme Energie <statements@acme.example>", ("Acme Energie", "statements@acme.example")),
        ('"Acme, B.V." <s@acme.example>', ("Acme, B.V.", "s@acme.example")),
        ("  s@acme.example  ", (None, "s@acme.example")),
        ("<s@acme.example>", (None, "s@acme.example")),
    ],
)
def test_a_sender_is_a_name_and_an_address(given: str, parsed: tuple[str | None, str]) -> None:
    assert parse_sender(given) == parsed


@pytest.mark.parametrize(
    "given",
    [
        "Acme <s@acme.example>\r\nBcc: victim@example.nl",
        "Acme\nBcc: victim@example.nl <s@acme.example>",
        "s@acme.example\nBcc: victim@example.nl",
        "Acme <s@acme.example",
        "Acme <a@b.example> <c@d.example>",
    ],
)
def test_a_sender_that_could_inject_a_header_is_refused(given: str) -> None:
    with pytest.raises(BrandingError) as caught:
        parse_sender(given)
    assert caught.value.field == "sender"


@pytest.mark.parametrize(
    "address",
    [
        "not an address",
        "s@localhost",
        "s@acme.example\r\nBcc: victim@example.nl",
        "s@-acme.example",
        "s@acme.123",
        "<s@acme.example>",
        "s@acme.example,victim@example.nl",
        "",
    ],
)
def test_a_sender_address_must_be_plain(address: str) -> None:
    assert refused_field(sender_address=address) == "sender_address"


@pytest.mark.parametrize("name", ["Acme\r\nBcc: victim@example.nl", "Acme <x>", 'Ac"me'])
def test_a_sender_name_must_be_one_plain_line(name: str) -> None:
    assert refused_field(sender_name=name) == "sender_name"


def test_statements_come_from_the_partner_s_sender_else_the_provider_s_address() -> None:
    sent = replace(BRAND, sender_name="Acme Statements", sender_address="s@acme.example")
    parsed = email.message_from_bytes(
        build_statement_message(
            STATEMENT, sent, sender="ere@provider.example", dated=DATED
        ).as_bytes(),
        policy=policy.default,
    )
    assert str(parsed["From"]) == "Acme Statements <s@acme.example>"
    assert parsed["Message-ID"] == "<2026Q2-c-1@acme.example>"
    default = build_statement_message(STATEMENT, BRAND, sender="ere@provider.example", dated=DATED)
    assert str(default["From"]) == "Acme Energie <ere@provider.example>"
    addressed_only = replace(BRAND, sender_address="s@acme.example")
    built = build_statement_message(
        STATEMENT, addressed_only, sender="ere@provider.example", dated=DATED
    )
    assert str(built["From"]) == "Acme Energie <s@acme.example>"


# --- texts per language --------------------------------------------------------------------------


def test_the_intro_and_closing_are_in_the_statement_s_language() -> None:
    dutch = render_text(STATEMENT, BRAND)
    assert "Beste Jan de Vries,\n\nHier is uw overzicht.\n\nUw laadsessies:" in dutch
    assert "Met vriendelijke groet,\nAcme Energie\n" in dutch
    assert "Here is your statement." not in dutch and "Kind regards" not in dutch
    english = render_text(STATEMENT, BRAND, language="en")
    assert "Dear Jan de Vries,\n\nHere is your statement.\n\nYour charging sessions:" in english
    assert "Kind regards,\nAcme Energie\n" in english and "Hier is uw" not in english
    page = lxml_html.fromstring(render_html(STATEMENT, BRAND, language="en"))
    assert "Here is your statement." in page.text_content()
    assert "Kind regards,\nAcme Energie" in "\n".join(page.xpath("//p/text()"))
    assert "Hier is uw overzicht." not in page.text_content()


def test_no_intro_or_closing_adds_no_paragraph() -> None:
    text = render_text(STATEMENT, PartnerBranding("Acme"))
    assert "Beste Jan de Vries,\n\nUw laadsessies:" in text
    assert re.search(r"\nUitbetaald: +€ 3,38\n\Z", text)


# --- the partner's name in the remittance --------------------------------------------------------


def test_the_remittance_names_the_partner_only_when_it_chooses_so() -> None:
    assert BRAND.remittance("ERE payout 2026Q2") == "ERE payout 2026Q2"
    named = replace(BRAND, remittance_name=True)
    assert named.remittance("ERE payout 2026Q2") == "ERE payout 2026Q2 via Acme Energie"


def test_the_remittance_keeps_to_the_sepa_character_set_and_length() -> None:
    odd = PartnerBranding("Zoë & Co <Laden>; {x}", remittance_name=True)
    assert odd.remittance("ERE 2026Q2") == "ERE 2026Q2 via Zoe + Co Laden x"
    long_name = PartnerBranding("Laadpalen " * 20, remittance_name=True)
    shown = long_name.remittance("ERE payout 2026Q2")
    assert len(shown) <= MAX_REMITTANCE_CHARS and shown.startswith(
        "ERE payout 2026Q2 via Laadpalen"
    )
    assert not shown.endswith(" ")
    assert long_name.remittance("x" * 134) == "x" * 134 + " via L"  # exactly 140
    no_room = "x" * 136
    assert long_name.remittance(no_room) == no_room
    assert PartnerBranding("🔌⚡", remittance_name=True).remittance("ERE 2026Q2") == "ERE 2026Q2"


def test_a_partner_s_remittance_goes_to_its_direct_customers_not_to_a_pool() -> None:
    partners = {
        "named": PartnerPayout("named", PayoutModel.DIRECT, remittance="ERE 2026Q2 via Named"),
        "plain": PartnerPayout("plain", PayoutModel.DIRECT),
        "pool": PartnerPayout(
            "pool",
            PayoutModel.PARTNER_ACCOUNT,
            BankAccount("Pool BV", "NL20INGB0001234567"),
            remittance="ERE 2026Q2 via Pool",
        ),
    }
    account = BankAccount("Jan", "NL91ABNA0417164300")
    plan = plan_payouts(
        [
            CustomerBalance("a", "named", Decimal("5.00"), account=account),
            CustomerBalance("b", "plain", Decimal("5.00"), account=account),
            CustomerBalance("c", None, Decimal("5.00"), account=account),
            CustomerBalance("d", "pool", Decimal("5.00")),
        ],
        partners,
        minimum=Decimal("1.00"),
        payout_run_id="2026Q2",
        remittance="ERE 2026Q2",
    )
    assert {p.payee_id: p.transfer.remittance for p in plan.transfers} == {
        "a": "ERE 2026Q2 via Named",
        "b": "ERE 2026Q2",
        "c": "ERE 2026Q2",
        "pool": "ERE 2026Q2",
    }


# --- stored branding -----------------------------------------------------------------------------


def test_stored_branding_is_rebuilt_with_defaults_and_unknown_keys_ignored() -> None:
    stored = '{"colour": "#000000", "remittance_name": true, "added_later": 1}'
    branding = PartnerBranding.from_stored("Acme B.V.", stored)
    assert branding == PartnerBranding("Acme B.V.", "#000000", remittance_name=True)
    assert PartnerBranding.from_stored("Acme", None) == PartnerBranding("Acme")
    assert PartnerBranding.from_stored("Acme", {"display_name": "Ac"}).display_name == "Ac"
    with pytest.raises(BrandingError, match="true or false"):
        PartnerBranding.from_stored("Acme", {"remittance_name": "yes"})
