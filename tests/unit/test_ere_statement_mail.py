"""Payout statement e-mails: rendering, the message (core), and the .eml fallback of the delivery."""

from __future__ import annotations

import email
import os
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from lxml import html as lxml_html  # type: ignore[import-untyped]

from proxy.ere.core.fee_invoice import FeeInvoice, Provider, invoice_number
from proxy.ere.core.settlement import Settlement, SettlementRow, settlement_csv, settlement_html
from proxy.ere.core.statement_mail import (
    FigureLine,
    PartnerBranding,
    PayoutStatement,
    PricingBasis,
    StatementLine,
    build_statement_message,
    fee_rate_text,
    render_html,
    render_text,
)
from proxy.ere.jobs import files
from proxy.ere.jobs.statement_delivery import SmtpSettings, StatementDeliveryError, send_or_write

DATED = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
SENDER = "statements@acme.example"
BRAND = PartnerBranding(
    display_name="Acme Energie",
    colour="#FFCC00",
    logo_url="https://cdn.acme.example/logo.png",
    footer_text="Acme Energie B.V.\nKvK 12345678",
)
STATEMENT = PayoutStatement(
    statement_id="2026Q1-cust-42",
    customer_name="Jan de Vries",
    customer_email="jan@example.nl",
    period_label="2026 Q1",
    sessions=(
        StatementLine(date(2026, 1, 3), Decimal("42.37")),
        StatementLine(date(2026, 2, 14), Decimal("1000.0005")),
    ),
    ere=Decimal("14.10"),
    unit_price=Decimal("0.25"),
    pricing_basis=PricingBasis.PER_ERE,
    gross=Decimal("3.53"),
    fee=Decimal("0.71"),
    fee_vat=Decimal("0.12"),
    net=Decimal("2.82"),
    carried_in=Decimal("1.00"),
    paid_to="NL** **** **** **45 67",
)
HOSTILE_NAME = '<script>alert("x")</script> & Zoë\r\nBcc: evil@attacker.example'


def message(
    statement: PayoutStatement = STATEMENT, branding: PartnerBranding = BRAND, language: str = "nl"
) -> EmailMessage:
    return build_statement_message(
        statement, branding, sender=SENDER, dated=DATED, language=language
    )


# --- rendering -----------------------------------------------------------------------------------


def test_plain_text_statement_is_dutch_by_default_with_sessions_totals_fee_vat_and_carry_in() -> (
    None
):
    assert render_text(STATEMENT, BRAND) == (
        "Acme Energie\n"
        "ERE-uitbetalingsoverzicht, 2026 Q1\n"
        "\n"
        "Beste Jan de Vries,\n"
        "\n"
        "Uw laadsessies:\n"
        "\n"
        "  Datum                  kWh\n"
        "  03-01-2026          42,370\n"
        "  14-02-2026       1.000,001\n"
        "  Totaal           1.042,371\n"
        "\n"
        "Energie:                             1.042,371 kWh\n"
        "Verdiende ERE:                       14,10 ERE\n"
        "Prijs:                               € 0,25 per ERE\n"
        "Bruto:                               € 3,53\n"
        "Vergoeding (incl. € 0,12 btw):       € -0,71\n"
        "Netto:                               € 2,82\n"
        "Overgebracht uit eerdere kwartalen:  € 1,00\n"
        "Uitbetaald:                          € 3,82\n"
        "Uitbetaald aan:                      NL** **** **** **45 67\n"
        "\n"
        "--\n"
        "Acme Energie B.V.\n"
        "KvK 12345678\n"
    )


def test_plain_text_statement_in_english_on_request() -> None:
    assert render_text(STATEMENT, BRAND, language="en") == (
        "Acme Energie\n"
        "ERE payout statement, 2026 Q1\n"
        "\n"
        "Dear Jan de Vries,\n"
        "\n"
        "Your charging sessions:\n"
        "\n"
        "  Date                   kWh\n"
        "  2026-01-03          42.370\n"
        "  2026-02-14       1,000.001\n"
        "  Total            1,042.371\n"
        "\n"
        "Energy:                            1,042.371 kWh\n"
        "ERE earned:                        14.10 ERE\n"
        "Price:                             €0.25 per ERE\n"
        "Gross:                             €3.53\n"
        "Fee (incl. €0.12 VAT):             -€0.71\n"
        "Net:                               €2.82\n"
        "Carried in from earlier quarters:  €1.00\n"
        "Paid out:                          €3.82\n"
        "Paid to:                           NL** **** **** **45 67\n"
        "\n"
        "--\n"
        "Acme Energie B.V.\n"
        "KvK 12345678\n"
    )


def test_carry_over_per_kwh_pricing_and_large_numbers() -> None:
    statement = replace(
        STATEMENT,
        sessions=(StatementLine(date(2026, 3, 1), Decimal("12345.6785")),),
        ere=Decimal("4110.12"),
        unit_price=Decimal("0.1"),
        pricing_basis=PricingBasis.PER_KWH,
        gross=Decimal("1234.57"),
        fee=Decimal("246.91"),
        fee_vat=Decimal("42.85"),
        net=Decimal("987.66"),
        carried_in=Decimal("0"),
        carried_over=Decimal("987.66"),
        paid_to=None,
        carry_over_note="Bedragen onder € 5,00 worden met het volgende kwartaal uitbetaald.",
    )
    text = render_text(statement, BRAND)

    assert "12.345,679" in text  # display rounding half up, to the Wh
    assert "€ 0,10 per kWh" in text
    assert re.search(r"^Bruto: +€ 1\.234,57$", text, re.MULTILINE)
    assert re.search(r"^Doorgeschoven naar volgend kwartaal: +€ -987,66$", text, re.MULTILINE)
    assert re.search(r"^Uitbetaald: +€ 0,00$", text, re.MULTILINE)
    assert "Overgebracht" not in text and "Uitbetaald aan" not in text
    assert "Bedragen onder € 5,00 worden met het volgende kwartaal uitbetaald." in text

    english = render_text(statement, BRAND, language="en")
    assert "12,345.679" in english and "€0.10 per kWh" in english
    assert re.search(r"^Gross: +€1,234.57$", english, re.MULTILINE)
    assert re.search(r"^Carried over to next quarter: +-€987.66$", english, re.MULTILINE)


@pytest.mark.parametrize(
    ("price", "language", "shown"),
    [
        (Decimal("0.2833"), "nl", "Prijs: € 0,2833 per ERE"),
        (Decimal("0.28334"), "nl", "Prijs: € 0,2833 per ERE"),
        (Decimal("1"), "nl", "Prijs: € 1,00 per ERE"),
        (Decimal("0.125"), "nl", "Prijs: € 0,125 per ERE"),
        (Decimal("0.2833"), "en", "Price: €0.2833 per ERE"),
        (Decimal("1"), "en", "Price: €1.00 per ERE"),
        (Decimal("0.125"), "en", "Price: €0.125 per ERE"),
    ],
)
def test_unit_prices_show_two_to_four_decimals(price: Decimal, language: str, shown: str) -> None:
    text = render_text(replace(STATEMENT, unit_price=price), BRAND, language=language)
    assert shown in flat(text)


def test_a_statement_without_sessions_says_so() -> None:
    empty = replace(
        STATEMENT,
        sessions=(),
        ere=Decimal("0"),
        gross=Decimal("0"),
        fee=Decimal("0"),
        fee_vat=Decimal("0"),
        net=Decimal("0"),
    )
    assert "(geen laadsessies dit kwartaal)" in render_text(empty, BRAND)
    assert "(geen laadsessies dit kwartaal)" in render_html(empty, BRAND)
    assert "(no sessions this quarter)" in render_text(empty, BRAND, language="en")
    assert "(no sessions this quarter)" in render_html(empty, BRAND, language="en")


def test_html_shows_the_same_figures_with_the_partner_branding() -> None:
    page = lxml_html.fromstring(render_html(STATEMENT, BRAND))

    assert page.get("lang") == "nl"
    banner = page.xpath("//body/div[1]")[0]
    assert "background:#FFCC00" in banner.get("style")
    assert "color:#000000" in banner.get("style")  # dark text on a light brand colour
    assert page.xpath("//img/@src") == ["https://cdn.acme.example/logo.png"]
    assert page.xpath("//img/@alt") == ["Acme Energie"]
    rows = [[cell.text_content() for cell in row] for row in page.xpath("//table[2]//tr")]
    assert rows == [
        ["Energie", "1.042,371 kWh"],
        ["Verdiende ERE", "14,10 ERE"],
        ["Prijs", "€ 0,25 per ERE"],
        ["Bruto", "€ 3,53"],
        ["Vergoeding (incl. € 0,12 btw)", "€ -0,71"],
        ["Netto", "€ 2,82"],
        ["Overgebracht uit eerdere kwartalen", "€ 1,00"],
        ["Uitbetaald", "€ 3,82"],
        ["Uitbetaald aan", "NL** **** **** **45 67"],
    ]
    sessions = [[cell.text_content() for cell in row] for row in page.xpath("//table[1]//tr")]
    assert sessions == [
        ["Datum", "kWh"],
        ["03-01-2026", "42,370"],
        ["14-02-2026", "1.000,001"],
        ["Totaal", "1.042,371"],
    ]
    assert "Acme Energie B.V.\nKvK 12345678" in "\n".join(page.xpath("//p[last()]/text()"))


def test_html_in_english_shows_the_english_figures() -> None:
    page = lxml_html.fromstring(render_html(STATEMENT, BRAND, language="en"))

    assert page.get("lang") == "en"
    rows = [[cell.text_content() for cell in row] for row in page.xpath("//table[2]//tr")]
    assert rows[0] == ["Energy", "1,042.371 kWh"]
    assert rows[4] == ["Fee (incl. €0.12 VAT)", "-€0.71"]
    assert rows[7] == ["Paid out", "€3.82"]
    sessions = [[cell.text_content() for cell in row] for row in page.xpath("//table[1]//tr")]
    assert sessions[1] == ["2026-01-03", "42.370"]


def test_a_dark_brand_colour_gets_white_text() -> None:
    page = lxml_html.fromstring(render_html(STATEMENT, replace(BRAND, colour="#1f2a44")))
    assert "color:#ffffff" in page.xpath("//body/div[1]")[0].get("style")


def test_html_escapes_everything_supplied() -> None:
    branding = PartnerBranding(
        display_name='Evil "Partner" <img src=x onerror=alert(1)>',
        colour="#123456",
        logo_url='https://cdn.example/logo.png?a=1&b="><script>alert(2)</script>',
        footer_text="</p><script>alert(3)</script>\nline 2",
    )
    statement = replace(
        STATEMENT,
        customer_name=HOSTILE_NAME,
        period_label="<b>Q1</b>",
        paid_to="<a href='javascript:x'>you</a>",
        carry_over_note="<iframe>",
    )
    source = render_html(statement, branding)
    page = lxml_html.fromstring(source)

    assert page.xpath("//script | //iframe | //a | //b") == []
    assert len(page.xpath("//img")) == 1 and page.xpath("//img/@onerror") == []
    assert page.xpath("//img/@src") == [branding.logo_url]
    assert (
        'Beste <script>alert("x")</script> & Zoë Bcc: evil@attacker.example,' in page.text_content()
    )
    assert "</p><script>alert(3)</script>" in page.text_content()
    assert 'Evil "Partner" <img src=x onerror=alert(1)>' in page.xpath("//body/div[1]/span")[0].text


def test_one_line_fields_cannot_fake_lines_in_the_text_body() -> None:
    text = render_text(replace(STATEMENT, customer_name="Jan\nUitbetaald: € 1.000.000,00"), BRAND)
    assert "Beste Jan Uitbetaald: € 1.000.000,00," in text
    assert [line for line in text.splitlines() if line.startswith("Uitbetaald:")] == [
        "Uitbetaald:                          € 3,82"
    ]


@pytest.mark.parametrize(
    "colour", ["red", "#12345", "#1234567", "#12345g", "#fff;background:url(x)", ""]
)
def test_brand_colours_must_be_six_digit_hex(colour: str) -> None:
    with pytest.raises(ValueError, match="brand colour"):
        PartnerBranding("Acme", colour=colour)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "http://cdn.example/logo.png",
        "https://",
        "https://cdn.example/a b.png",
        "data:x",
    ],
)
def test_logo_urls_must_be_plain_https(url: str) -> None:
    with pytest.raises(ValueError, match="logo URL"):
        PartnerBranding("Acme", logo_url=url)


def test_figures_that_do_not_add_up_are_refused() -> None:
    with pytest.raises(ValueError, match="net 2.83 is not gross 3.53 minus fee 0.71"):
        replace(STATEMENT, net=Decimal("2.83"))
    with pytest.raises(ValueError, match="whole cents"):
        replace(STATEMENT, carried_in=Decimal("0.005"))
    with pytest.raises(ValueError, match="exceeds the fee"):
        replace(STATEMENT, fee_vat=Decimal("0.72"))
    with pytest.raises(TypeError, match="gross must be a Decimal"):
        replace(STATEMENT, gross=3.53)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session kWh must be a Decimal"):
        replace(STATEMENT, sessions=(StatementLine(date(2026, 1, 1), 1.5),))  # type: ignore[arg-type]


# --- the message ---------------------------------------------------------------------------------


def test_message_is_multipart_alternative_from_the_partner_to_the_customer() -> None:
    built = message()
    parsed = email.message_from_bytes(built.as_bytes(), policy=policy.default)

    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert str(parsed["From"]) == "Acme Energie <statements@acme.example>"
    assert str(parsed["To"]) == "Jan de Vries <jan@example.nl>"
    assert str(parsed["Subject"]) == "Acme Energie: ERE-uitbetalingsoverzicht 2026 Q1"
    assert parsed["Message-ID"] == "<2026Q1-cust-42@acme.example>"
    assert parsed["Date"].datetime == DATED
    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content() == render_text(STATEMENT, BRAND)
    assert html_part.get_content() == render_html(STATEMENT, BRAND)


def test_an_english_message_has_an_english_subject_and_bodies() -> None:
    parsed = email.message_from_bytes(message(language="en").as_bytes(), policy=policy.default)

    assert str(parsed["Subject"]) == "Acme Energie: ERE payout statement 2026 Q1"
    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content() == render_text(STATEMENT, BRAND, language="en")
    assert html_part.get_content() == render_html(STATEMENT, BRAND, language="en")


def test_hostile_names_cannot_inject_headers() -> None:
    hostile = replace(STATEMENT, customer_name=HOSTILE_NAME)
    branding = replace(BRAND, display_name="Acme\r\nBcc: evil@attacker.example")
    parsed = email.message_from_bytes(message(hostile, branding).as_bytes(), policy=policy.default)

    assert parsed["Bcc"] is None
    assert [address.addr_spec for address in parsed["To"].addresses] == ["jan@example.nl"]
    # the stdlib may fold a long encoded display name with an extra space; compare without spaces
    shown = parsed["To"].addresses[0].display_name.replace(" ", "")
    assert shown == '<script>alert("x")</script>&ZoëBcc:evil@attacker.example'
    assert parsed["From"].addresses[0].display_name == "Acme Bcc: evil@attacker.example"
    assert "\n" not in str(parsed["Subject"])


@pytest.mark.parametrize(
    "address", ["not an address", "jan@", "@example.nl", "jan@example.nl\r\nBcc: x@y.z", ""]
)
def test_unusable_customer_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="customer e-mail"):
        message(replace(STATEMENT, customer_email=address))


def test_message_ids_are_deterministic_and_safe() -> None:
    assert message()["Message-ID"] == message()["Message-ID"]
    odd = message(replace(STATEMENT, statement_id="../../etc/passwd <x>"))
    assert odd["Message-ID"].startswith("<statement-") and "/" not in odd["Message-ID"]


def test_a_naive_date_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_statement_message(STATEMENT, BRAND, sender=SENDER, dated=datetime(2026, 4, 2, 9, 0))


# --- writing files -------------------------------------------------------------------------------


def test_without_smtp_messages_are_written_as_eml_files(tmp_path: Path) -> None:
    second = replace(STATEMENT, statement_id="2026Q1-cust-43", customer_email="piet@example.nl")
    messages = [message(), message(second)]

    deliveries = send_or_write(messages, None, tmp_path / "out")

    assert sorted(os.listdir(tmp_path / "out")) == ["2026Q1-cust-42.eml", "2026Q1-cust-43.eml"]
    assert [(d.message_id, d.recipients, d.path) for d in deliveries] == [
        (
            "<2026Q1-cust-42@acme.example>",
            ("jan@example.nl",),
            tmp_path / "out" / "2026Q1-cust-42.eml",
        ),
        (
            "<2026Q1-cust-43@acme.example>",
            ("piet@example.nl",),
            tmp_path / "out" / "2026Q1-cust-43.eml",
        ),
    ]
    raw = (tmp_path / "out" / "2026Q1-cust-42.eml").read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=policy.default)
    body = parsed.get_body(("plain",))
    assert body is not None
    plain = body.get_content().replace("\r\n", "\n")
    assert plain == render_text(STATEMENT, BRAND)


def test_rewriting_replaces_the_earlier_file(tmp_path: Path) -> None:
    send_or_write([message()], None, tmp_path)
    corrected = replace(STATEMENT, customer_name="Jan de Vries-Jansen")
    send_or_write([message(corrected)], None, tmp_path)
    assert os.listdir(tmp_path) == ["2026Q1-cust-42.eml"]
    assert b"Jan de Vries-Jansen" in (tmp_path / "2026Q1-cust-42.eml").read_bytes()


def test_messages_without_or_with_shared_message_ids_are_refused_before_writing(
    tmp_path: Path,
) -> None:
    anonymous = message()
    del anonymous["Message-ID"]
    with pytest.raises(ValueError, match="no Message-ID"):
        send_or_write([message(), anonymous], None, tmp_path)
    with pytest.raises(ValueError, match="share the Message-ID"):
        send_or_write([message(), message()], None, tmp_path)
    assert os.listdir(tmp_path) == []


def test_nothing_to_send_does_nothing(tmp_path: Path) -> None:
    assert send_or_write([], SmtpSettings("unreachable.invalid"), tmp_path) == []
    assert send_or_write([], None, tmp_path / "never") == []
    assert not (tmp_path / "never").exists()


def test_a_failing_write_reports_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    calls = []

    def replace_once(source: str, destination: str) -> None:
        calls.append(destination)
        if len(calls) > 1:
            raise OSError("disk full")
        real_replace(source, destination)

    monkeypatch.setattr(files.os, "replace", replace_once)
    second = replace(STATEMENT, statement_id="2026Q1-cust-43")
    with pytest.raises(StatementDeliveryError, match="disk full") as caught:
        send_or_write([message(), message(second)], None, tmp_path)

    assert [d.message_id for d in caught.value.delivered] == ["<2026Q1-cust-42@acme.example>"]
    assert caught.value.failed_message_id == "<2026Q1-cust-43@acme.example>"
    assert os.listdir(tmp_path) == ["2026Q1-cust-42.eml"]


def test_credentials_without_starttls_are_refused() -> None:
    with pytest.raises(ValueError, match="STARTTLS"):
        SmtpSettings("smtp.example", username="u", password="p", starttls=False)
    assert "secret" not in repr(SmtpSettings("smtp.example", username="u", password="secret"))


# --- lines, carry-overs, invoices, settlements ---------------------------------------------------

PROVIDER = Provider("ERE Provider BV", "Stationsplein 1, Utrecht", "12345678", "NL123456789B01")
# A correction of 2026Q2 alone: 40 kWh → 13.30 ERE at €0.30 = €3.99; fee 20 % = 0.798 → 0.80,
# VAT 0.80 × 21/121 = 0.1388 → 0.14; net 3.19.
CORRECTION = FigureLine(
    "2026Q2",
    True,
    Decimal("40"),
    Decimal("13.30"),
    Decimal("0.30"),
    Decimal("3.99"),
    Decimal("0.20"),
    Decimal("0.80"),
    Decimal("3.19"),
    corrected=((17, Decimal("40")), (18, Decimal("-2.5"))),
)
CORRECTED = replace(
    STATEMENT,
    sessions=(),
    ere=Decimal("13.30"),
    unit_price=None,
    gross=Decimal("3.99"),
    fee=Decimal("0.80"),
    fee_vat=Decimal("0.14"),
    net=Decimal("3.19"),
    carried_in=Decimal(0),
    lines=(CORRECTION,),
    invoice=FeeInvoice(
        invoice_number("ERE", 2026, 7),
        date(2026, 10, 20),
        PROVIDER,
        Decimal("0.80"),
        Decimal("0.14"),
    ),
)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_correction_shows_its_own_price_what_it_corrects_and_no_zero_price() -> None:
    text = flat(render_text(CORRECTED, BRAND))
    assert "€ 0,00" not in text and "Prijs:" not in text
    assert (
        "correctie van 2026Q2: 40,000 kWh 13,30 ERE € 0,30 per ERE € 3,99 vergoeding 20% "
        "€ -0,80 netto € 3,19" in text
    )
    assert "sessie 17: +40,000 kWh sessie 18: -2,500 kWh" in text
    page = render_html(CORRECTED, BRAND)
    assert "correctie van 2026Q2" in page and "sessie 18: -2,500 kWh" in page

    english = flat(render_text(CORRECTED, BRAND, language="en"))
    assert "€0.00" not in english and "Price:" not in english
    assert (
        "correction of 2026Q2: 40.000 kWh 13.30 ERE €0.30 per ERE €3.99 fee 20 % -€0.80 net €3.19"
        in english
    )
    assert "session 17: +40.000 kWh session 18: -2.500 kWh" in english


def test_a_line_explains_its_fee_rate_in_the_statement_s_language() -> None:
    referred = replace(
        CORRECTION, fee_rate=Decimal("0.16"), active_referrals=2, referral_step=Decimal("0.02")
    )
    statement = replace(CORRECTED, lines=(referred,))
    assert "vergoeding 16% (20% min 2 actieve doorverwijzingen × 2%, minimaal 10%)" in flat(
        render_text(statement, BRAND)
    )
    assert "fee 16 % (20 % less 2 active referrals × 2 %, floor 10 %)" in flat(
        render_text(statement, BRAND, language="en")
    )


@pytest.mark.parametrize(
    "rate, referrals, language, shown",
    [
        (Decimal("0.20"), 0, "en", "20 %"),
        (Decimal("0.20"), None, "en", "20 %"),
        (Decimal("0.16"), 2, "en", "16 % (20 % less 2 active referrals × 2 %, floor 10 %)"),
        (Decimal("0.18"), 1, "en", "18 % (20 % less 1 active referral × 2 %, floor 10 %)"),
        (Decimal("0.10"), 7, "en", "10 % (20 % less 7 active referrals × 2 %, floor 10 %)"),
        (Decimal("0.15"), None, "en", "15 % (20 % less referral discounts, floor 10 %)"),
        (Decimal("0.20"), 0, "nl", "20%"),
        (Decimal("0.18"), 1, "nl", "18% (20% min 1 actieve doorverwijzing × 2%, minimaal 10%)"),
        (Decimal("0.16"), 2, "nl", "16% (20% min 2 actieve doorverwijzingen × 2%, minimaal 10%)"),
        (
            Decimal("0.15"),
            None,
            "nl",
            "15% (20% min kortingen voor doorverwijzingen, minimaal 10%)",
        ),
    ],
)
def test_the_fee_rate_says_why(
    rate: Decimal, referrals: int | None, language: str, shown: str
) -> None:
    assert fee_rate_text(rate, referrals, Decimal("0.02"), language) == shown


def test_the_fee_rate_is_dutch_by_default() -> None:
    assert fee_rate_text(Decimal("0.175"), None, Decimal("0.025")) == (
        "17,5% (20% min kortingen voor doorverwijzingen, minimaal 10%)"
    )


def test_an_invoice_names_the_provider_number_and_amounts() -> None:
    text = flat(render_text(CORRECTED, BRAND))
    assert "Factuur ERE-2026-000007 voor onze vergoeding" in text
    assert "Van: ERE Provider BV, Stationsplein 1, Utrecht KvK: 12345678" in text
    assert "Btw-nummer: NL123456789B01 Factuurdatum: 20-10-2026" in text
    # 0.80 with VAT, 0.14 of it VAT: 0.66 without.
    assert "Vergoeding excl. btw: € 0,66 Btw 21%: € 0,14 Vergoeding incl. btw: € 0,80" in text
    assert "Factuur ERE-2026-000007" in render_html(CORRECTED, BRAND)


def test_an_english_invoice_names_the_provider_number_and_amounts() -> None:
    text = flat(render_text(CORRECTED, BRAND, language="en"))
    assert "Invoice ERE-2026-000007 for our fee" in text
    assert "From: ERE Provider BV, Stationsplein 1, Utrecht KvK: 12345678" in text
    assert "VAT number: NL123456789B01 Invoice date: 2026-10-20" in text
    assert "Fee without VAT: €0.66 VAT 21 %: €0.14 Fee with VAT: €0.80" in text
    assert "Invoice ERE-2026-000007" in render_html(CORRECTED, BRAND, language="en")


def test_a_negative_fee_is_a_credit_note() -> None:
    note = FeeInvoice(
        "ERE-2026-000008", date(2026, 10, 20), PROVIDER, Decimal("-0.60"), Decimal("-0.10")
    )
    assert note.credit_note and note.title() == "Creditnota ERE-2026-000008"
    assert note.title("en") == "Credit note ERE-2026-000008"
    assert note.fee_excl_vat == Decimal("-0.50")
    assert dict(note.rows())["Vergoeding incl. btw"] == "€ -0,60"
    assert dict(note.rows("en"))["Fee with VAT"] == "-€0.60"


@pytest.mark.parametrize(
    "fee, vat",
    [("0", "0"), ("0.80", "0.90"), ("0.80", "-0.10"), ("0.801", "0.14"), ("-0.60", "0.10")],
)
def test_invoices_that_do_not_add_up_are_refused(fee: str, vat: str) -> None:
    with pytest.raises(ValueError):
        FeeInvoice("ERE-2026-000009", date(2026, 10, 20), PROVIDER, Decimal(fee), Decimal(vat))


@pytest.mark.parametrize("seq", [0, -1, 1_000_000])
def test_invoice_numbers_are_six_digits(seq: int) -> None:
    assert invoice_number("ERE", 2026, 1) == "ERE-2026-000001"
    with pytest.raises(ValueError, match="outside"):
        invoice_number("ERE", 2026, seq)


def test_an_amount_still_owed_says_so_and_why() -> None:
    owed = replace(
        STATEMENT,
        sessions=(),
        ere=Decimal(0),
        unit_price=None,
        gross=Decimal(0),
        fee=Decimal(0),
        fee_vat=Decimal(0),
        net=Decimal(0),
        carried_in=Decimal("0.16"),
        carried_over=Decimal("0.16"),
        carry_over_note="minder dan het minimumbedrag voor uitbetaling",
    )
    text = flat(render_text(owed, BRAND))
    assert (
        "U hebt nog € 0,16 van ons tegoed: minder dan het minimumbedrag voor uitbetaling." in text
    )
    assert "Uitbetaald: € 0,00" in text and "Prijs" not in text
    english = flat(render_text(replace(owed, carry_over_note=None), BRAND, language="en"))
    assert "€0.16 is still owed to you: carried over." in english
    set_off = replace(owed, carried_over=Decimal("-0.16"), carried_in=Decimal("-0.16"))
    assert "€ 0,16 wordt verrekend met latere kwartalen: minder dan" in flat(
        render_text(set_off, BRAND)
    )


def test_hostile_invoice_and_line_texts_are_escaped() -> None:
    hostile = Provider(HOSTILE_NAME, HOSTILE_NAME, "1", "2")
    statement = replace(
        CORRECTED,
        lines=(replace(CORRECTION, delivery_quarter=HOSTILE_NAME),),
        invoice=replace(CORRECTED.invoice, provider=hostile),
    )
    page = render_html(statement, BRAND)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "\nBcc:" not in render_text(statement, BRAND)


SETTLED = (
    SettlementRow(
        "B",
        "Bram",
        "871687120000000028",
        Decimal("30"),
        Decimal("9.98"),
        Decimal("2.99"),
        Decimal("0.60"),
        Decimal("2.39"),
        Decimal(0),
        Decimal(0),
    ),
    SettlementRow(
        "=D",
        "<b>Dina</b>",
        "871687120000000042",
        Decimal("10.5"),
        Decimal("3.49"),
        Decimal("1.05"),
        Decimal("0.21"),
        Decimal("0.84"),
        Decimal("0.16"),
        Decimal(0),
    ),
)


def test_a_settlement_adds_up_to_its_transfer_or_is_refused() -> None:
    settlement = Settlement("2026Q3", "Supplier Two", "E2E-1", Decimal("3.39"), SETTLED)
    rows = settlement_csv(settlement).splitlines()
    assert rows[0].split(",")[-1] == "paid" and rows[2].split(",")[2] == "'=D"  # no formula
    assert "&lt;b&gt;Dina" in settlement_html(settlement) and "€3.39" in settlement_html(settlement)
    with pytest.raises(ValueError, match="add up to 3.39, the transfer is 3.40"):
        Settlement("2026Q3", "Supplier Two", "E2E-1", Decimal("3.40"), SETTLED)
