"""Payout statement e-mails: one partner-branded message per customer per quarter.

`render_text` and `render_html` are pure and show the same content, in Dutch unless `language`
is `en` (words and number formats: `proxy.ere.core.statement_texts`): the partner's intro, the
customer's sessions
(date, kWh); each statement line with its own kWh, ERE, price per ERE, gross, fee rate (and why:
`fee_rate_text`), fee and net, a correction naming the quarter it corrects and the sessions
whose kWh changed; the totals (gross, our fee with the VAT inside it, net); what was carried in
from, or over to, another quarter (an amount still owed says so, and why); and the fee as an
invoice or credit note (`proxy.ere.core.fee_invoice`); the partner's closing paragraph and
footer. A price is shown per line (or once, as `unit_price`, for a statement without lines), so
no statement shows a price it did not apply. The figures are rendered as given; the statement
only checks that they agree (net = gross - fee). Display rounding (kWh to 0.001, ERE and euros
to 0.01, a unit price to at most 4 decimals) is half up and never feeds back into any amount.

`build_statement_message` wraps both renderings in a multipart/alternative `EmailMessage` from
the partner's sender (`PartnerBranding.sender_*`, else the display name at the provider's
address) with a Message-ID derived from the statement id. Everything here is pure; sending the
messages (SMTP, or `.eml` files) is `proxy.ere.jobs.statement_delivery`.

Hostile input: everything a customer or partner supplies is HTML-escaped in the HTML body.
The brand colour, logo URL and sender are checked by `PartnerBranding`
(`proxy.ere.core.branding`), because escaping alone cannot make them safe. Names, subject and
other one-line fields never carry line breaks or other control characters, in headers or
bodies: these become spaces, so a name cannot inject a header or fake a line of the
statement. Only the partner's intro, closing and footer keep their line breaks.
"""

from __future__ import annotations

import enum
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from proxy.ere.core.branding import PartnerBranding
from proxy.ere.core.fee_invoice import FeeInvoice
from proxy.ere.core.statement_texts import (
    DEFAULT_LANGUAGE,
    StatementTexts,
    fee_rate_text,
    texts_for,
)

__all__ = [
    "FigureLine",
    "PartnerBranding",
    "PayoutStatement",
    "PricingBasis",
    "StatementLine",
    "build_statement_message",
    "fee_rate_text",
    "message_token",
    "render_html",
    "render_text",
]

_CENT = Decimal("0.01")
_ZERO = Decimal(0)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MESSAGE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PricingBasis(enum.Enum):
    """What the unit price is quoted per."""

    PER_ERE = "ERE"
    PER_KWH = "kWh"


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One charging session on a statement: the day it took place and its kWh."""

    charged_on: date
    kwh: Decimal


@dataclass(frozen=True, slots=True)
class FigureLine:
    """One statement line: a delivery quarter's energy, or a correction of one closed earlier.

    The fee rate is explained in the statement's language from `active_referrals` and
    `referral_step` (`fee_rate_text`) when the step is given; else `fee_rate_shown` is shown as
    given; empty: the bare rate. `corrected` lists, for a correction, each session whose kWh
    changed and by how much.
    """

    delivery_quarter: str
    correction: bool
    kwh: Decimal
    ere: Decimal
    eur_per_ere: Decimal
    gross: Decimal
    fee_rate: Decimal
    fee: Decimal
    net: Decimal
    fee_rate_shown: str = ""
    corrected: tuple[tuple[int, Decimal], ...] = ()
    active_referrals: int | None = None
    referral_step: Decimal | None = None

    def label(self, language: str = DEFAULT_LANGUAGE) -> str:
        """What the line is: `geleverd in 2026Q2` or `correctie van 2026Q2` (Dutch)."""
        texts = texts_for(language)
        kind = texts.correction_of if self.correction else texts.delivered_in
        return kind.format(quarter=_header_text(self.delivery_quarter))

    def rate_text(self, language: str = DEFAULT_LANGUAGE) -> str:
        """The fee rate, with its reason when known."""
        if self.referral_step is not None:
            return fee_rate_text(self.fee_rate, self.active_referrals, self.referral_step, language)
        return _header_text(self.fee_rate_shown) or texts_for(language).percent(self.fee_rate)

    def figures(self, language: str = DEFAULT_LANGUAGE) -> str:
        """The line's kWh, ERE, price, gross, fee rate, fee and net on one line."""
        texts = texts_for(language)
        return texts.line_figures.format(
            kwh=texts.kwh(self.kwh),
            ere=texts.ere(self.ere),
            price=texts.unit_price(self.eur_per_ere),
            gross=texts.euro(self.gross),
            rate=self.rate_text(language),
            fee=texts.euro(-self.fee),
            net=texts.euro(self.net),
        )


@dataclass(frozen=True, slots=True)
class PayoutStatement:
    """A customer's payout statement for one quarter, as figures already computed and rounded.

    Money is Decimal euros in whole cents: `fee` includes VAT and `fee_vat` is the VAT inside
    it; `net` must equal `gross - fee`. `carried_in` came from earlier quarters and
    `carried_over` moves to the next one; `paid_out` is what is left. `paid_to` says where the
    payout goes (a masked IBAN, or the partner that receives it), `carry_over_note` why an
    amount was carried over. `lines` are the statement lines (each with its own price; then
    `unit_price` is None), `invoice` the fee as an invoice. Raises `TypeError` for a
    non-Decimal figure and `ValueError` for figures that do not add up or are finer than a cent.
    """

    statement_id: str
    customer_name: str
    customer_email: str
    period_label: str
    sessions: tuple[StatementLine, ...]
    ere: Decimal
    unit_price: Decimal | None
    pricing_basis: PricingBasis
    gross: Decimal
    fee: Decimal
    fee_vat: Decimal
    net: Decimal
    carried_in: Decimal = _ZERO
    carried_over: Decimal = _ZERO
    paid_to: str | None = None
    carry_over_note: str | None = None
    lines: tuple[FigureLine, ...] = ()
    invoice: FeeInvoice | None = None

    def __post_init__(self) -> None:
        for line in self.sessions:
            _require_decimal(line.kwh, "session kWh")
        _require_decimal(self.ere, "ERE")
        if self.unit_price is not None:
            _require_decimal(self.unit_price, "unit price")
        for figures in self.lines:
            for name in ("kwh", "ere", "eur_per_ere", "gross", "fee_rate", "fee", "net"):
                _require_decimal(getattr(figures, name), f"line {name}")
            if figures.referral_step is not None:
                _require_decimal(figures.referral_step, "line referral_step")
        for name in ("gross", "fee", "fee_vat", "net", "carried_in", "carried_over"):
            amount = _require_decimal(getattr(self, name), name)
            if amount != amount.quantize(_CENT):
                raise ValueError(f"{name} must be in whole cents, got {amount}")
        if self.net != self.gross - self.fee:
            raise ValueError(f"net {self.net} is not gross {self.gross} minus fee {self.fee}")
        if abs(self.fee_vat) > abs(self.fee):
            raise ValueError(f"the VAT {self.fee_vat} inside the fee exceeds the fee {self.fee}")

    @property
    def total_kwh(self) -> Decimal:
        return sum((line.kwh for line in self.sessions), _ZERO)

    @property
    def stated_kwh(self) -> Decimal:
        """The kWh of the statement lines (of the sessions when there are no lines)."""
        if self.lines:
            return sum((line.kwh for line in self.lines), _ZERO)
        return self.total_kwh

    @property
    def paid_out(self) -> Decimal:
        return self.net + self.carried_in - self.carried_over


def render_text(
    statement: PayoutStatement, branding: PartnerBranding, *, language: str = DEFAULT_LANGUAGE
) -> str:
    """The plain-text body of a statement, in `language` (`nl` or `en`; `ValueError` else)."""
    t = texts_for(language)
    rows = _summary_rows(statement, t)
    width = max(len(label) for label, _ in rows)
    lines = [
        _header_text(branding.display_name),
        f"{t.title}, {_header_text(statement.period_label)}",
        "",
        t.greeting.format(name=_header_text(statement.customer_name)),
        "",
    ]
    if intro := _paragraph_lines(branding.intro(language)):
        lines += [*intro, ""]
    lines += [t.sessions_heading, "", f"  {t.date_heading:<12}{'kWh':>14}"]
    lines += [f"  {t.day(line.charged_on):<12}{t.kwh(line.kwh):>14}" for line in statement.sessions]
    if not statement.sessions:
        lines.append(f"  {t.no_sessions}")
    lines += [f"  {t.total:<12}{t.kwh(statement.total_kwh):>14}", ""]
    if statement.lines:
        lines += [t.lines_heading, ""]
        for figures in statement.lines:
            lines += [f"  {figures.label(language)}: {figures.figures(language)}"]
            lines += [f"    {change}" for change in _changes(figures, t)]
        lines.append("")
    lines += [f"{label + ':':<{width + 2}} {value}" for label, value in rows]
    lines += ["", note] if (note := _carry_note(statement, t)) else []
    if statement.invoice is not None:
        rows = statement.invoice.rows(language)
        width = max(len(label) for label, _ in rows)
        heading = t.invoice_heading.format(title=_header_text(statement.invoice.title(language)))
        lines += ["", heading]
        lines += [f"{label + ':':<{width + 2}} {_header_text(value)}" for label, value in rows]
    if closing := _paragraph_lines(branding.closing(language)):
        lines += ["", *closing]
    if branding.footer_text:
        lines += ["", "--", *_paragraph_lines(branding.footer_text)]
    return "\n".join(lines) + "\n"


def render_html(
    statement: PayoutStatement, branding: PartnerBranding, *, language: str = DEFAULT_LANGUAGE
) -> str:
    """The HTML body of a statement, in `language`; every supplied text is escaped."""
    t = texts_for(language)
    escaped = _escaped_line
    colour = branding.colour
    ink = _readable_ink(colour)
    logo = (
        f'<img src="{escaped(branding.logo_url)}" alt="{escaped(branding.display_name)}" height="40" '
        'style="vertical-align:middle;margin-right:12px;border:0">'
        if branding.logo_url
        else ""
    )
    cell = 'style="padding:4px 8px;border-bottom:1px solid #e5e5e5"'
    number_cell = 'style="padding:4px 8px;border-bottom:1px solid #e5e5e5;text-align:right"'
    session_rows = (
        "".join(
            f"<tr><td {cell}>{t.day(line.charged_on)}</td><td {number_cell}>{t.kwh(line.kwh)}</td></tr>"
            for line in statement.sessions
        )
        or f'<tr><td {cell} colspan="2">{escaped(t.no_sessions)}</td></tr>'
    )
    summary_rows = "".join(
        f"<tr><td {cell}>{escaped(label)}</td><td {number_cell}>{escaped(value)}</td></tr>"
        for label, value in _summary_rows(statement, t)
    )
    line_rows = "".join(
        f"<tr><td {cell}>{escaped(figures.label(language))}</td>"
        f"<td {number_cell}>{escaped(figures.figures(language))}"
        + "".join(f"<br>{escaped(change)}" for change in _changes(figures, t))
        + "</td></tr>"
        for figures in statement.lines
    )
    lines_table = (
        f'<table style="border-collapse:collapse;margin-top:16px">{line_rows}</table>\n'
        if line_rows
        else ""
    )
    note = f"<p>{escaped(text)}</p>" if (text := _carry_note(statement, t)) else ""
    invoice = statement.invoice
    invoice_table = (
        '<h2 style="font-size:16px">'
        f"{escaped(t.invoice_heading.format(title=invoice.title(language)))}</h2>"
        '<table style="border-collapse:collapse">'
        + "".join(
            f"<tr><td {cell}>{escaped(label)}</td><td {number_cell}>{escaped(value)}</td></tr>"
            for label, value in invoice.rows(language)
        )
        + "</table>\n"
        if invoice is not None
        else ""
    )
    intro = f"<p>{_multiline_html(text)}</p>\n" if (text := branding.intro(language)) else ""
    closing = f"<p>{_multiline_html(text)}</p>\n" if (text := branding.closing(language)) else ""
    footer = (
        f'<p style="color:#666;font-size:12px">{_multiline_html(branding.footer_text)}</p>'
        if branding.footer_text
        else ""
    )
    heading = f"{t.title}, {escaped(statement.period_label)}"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{t.language}"><head><meta charset="utf-8">'
        f"<title>{t.title} {escaped(statement.period_label)}</title></head>\n"
        '<body style="margin:0;padding:0;font-family:Arial,Helvetica,sans-serif;color:#222">\n'
        f'<div style="background:{colour};color:{ink};padding:16px 24px;font-size:20px">'
        f"{logo}<span>{escaped(branding.display_name)}</span></div>\n"
        '<div style="padding:16px 24px">\n'
        f'<h1 style="font-size:18px">{heading}</h1>\n'
        f"<p>{escaped(t.greeting.format(name=_header_text(statement.customer_name)))}</p>\n"
        f"{intro}"
        f"<p>{escaped(t.sessions_heading)}</p>\n"
        '<table style="border-collapse:collapse">'
        f"<tr><th {cell}>{t.date_heading}</th><th {number_cell}>kWh</th></tr>{session_rows}"
        f"<tr><th {cell}>{t.total}</th><th {number_cell}>{t.kwh(statement.total_kwh)}</th></tr></table>\n"
        f"{lines_table}"
        f'<table style="border-collapse:collapse;margin-top:16px">{summary_rows}</table>\n'
        f"{note}{invoice_table}{closing}{footer}</div>\n</body></html>\n"
    )


def build_statement_message(
    statement: PayoutStatement,
    branding: PartnerBranding,
    *,
    sender: str,
    dated: datetime,
    language: str = DEFAULT_LANGUAGE,
) -> EmailMessage:
    """A multipart/alternative e-mail (text, then HTML) from the partner to the customer, in
    `language`.

    From is the partner's `sender_name` (default: its display name) at its `sender_address`
    (default: `sender`, the provider's address); `dated` (timezone-aware) is the Date header.
    The Message-ID is derived from the statement id, so a statement built twice has the same
    one. Raises `ValueError` for an unusable e-mail address, a naive `dated` or an unknown
    language.
    """
    if dated.utcoffset() is None:
        raise ValueError("dated must be timezone-aware")
    t = texts_for(language)
    from_address = _address(
        branding.sender_name or branding.display_name, branding.sender_address or sender, "sender"
    )
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = _address(statement.customer_name, statement.customer_email, "customer e-mail")
    message["Subject"] = _header_text(
        t.subject.format(brand=branding.display_name, title=t.title, period=statement.period_label)
    )
    message["Date"] = format_datetime(dated)
    message["Message-ID"] = f"<{message_token(statement.statement_id)}@{from_address.domain}>"
    message.set_content(render_text(statement, branding, language=language), cte="quoted-printable")
    message.add_alternative(render_html(statement, branding, language=language), subtype="html")
    return message


def message_token(statement_id: str) -> str:
    """The local part of a statement's Message-ID (and the name of its `.eml` file).

    The statement id itself when it is a safe token (1-64 characters `A-Z a-z 0-9 . _ -`,
    starting with a letter or digit), else `statement-` and 32 hex digits of its SHA-256.
    """
    if _MESSAGE_TOKEN.fullmatch(statement_id):
        return statement_id
    return "statement-" + hashlib.sha256(statement_id.encode("utf-8")).hexdigest()[:32]


def _summary_rows(statement: PayoutStatement, t: StatementTexts) -> list[tuple[str, str]]:
    rows = [
        (t.energy, f"{t.kwh(statement.stated_kwh)} kWh"),
        (t.ere_earned, f"{t.ere(statement.ere)} ERE"),
    ]
    if statement.unit_price is not None:
        price = t.unit_price(statement.unit_price)
        rows.append((t.price, t.price_per.format(price=price, basis=statement.pricing_basis.value)))
    rows += [
        (t.gross, t.euro(statement.gross)),
        (t.fee_with_vat.format(vat=t.euro(statement.fee_vat)), t.euro(-statement.fee)),
        (t.net, t.euro(statement.net)),
    ]
    if statement.carried_in:
        rows.append((t.carried_in, t.euro(statement.carried_in)))
    if statement.carried_over:
        rows.append((t.carried_over, t.euro(-statement.carried_over)))
    rows.append((t.paid_out, t.euro(statement.paid_out)))
    if statement.paid_to:
        rows.append((t.paid_to, statement.paid_to))
    return rows


def _changes(figures: FigureLine, t: StatementTexts) -> list[str]:
    return [
        t.session_change.format(session=session_id, kwh=t.signed_kwh(kwh))
        for session_id, kwh in figures.corrected
    ]


def _carry_note(statement: PayoutStatement, t: StatementTexts) -> str:
    """Why an amount was carried over, and, for one still owed, that it is owed."""
    note = _header_text(statement.carry_over_note or "")
    if statement.carried_over > 0:
        return t.still_owed.format(amount=t.euro(statement.carried_over), why=note or t.carried)
    if statement.carried_over < 0:
        return t.set_off.format(amount=t.euro(-statement.carried_over), why=note or t.carried)
    return note


def _paragraph_lines(text: str) -> list[str]:
    """A partner's multi-line text as lines, each on one line of its own (no control chars)."""
    return [_header_text(line) for line in text.splitlines()]


def _require_decimal(value: object, name: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def _readable_ink(background: str) -> str:
    """Black or white text, whichever contrasts more with the brand colour (WCAG luminance)."""
    channels = [int(background[index : index + 2], 16) / 255 for index in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "#000000" if luminance > 0.179 else "#ffffff"


def _escaped_line(text: str | None) -> str:
    return html.escape(_header_text(text or ""), quote=True)


def _multiline_html(text: str) -> str:
    return "<br>".join(html.escape(_header_text(line), quote=True) for line in text.splitlines())


def _header_text(text: str) -> str:
    """`text` on one line: control characters and line breaks become spaces, runs collapse."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _address(display_name: str, addr_spec: str, what: str) -> Address:
    try:
        address = Address(display_name=_header_text(display_name), addr_spec=addr_spec)
    except (ValueError, IndexError, HeaderParseError) as error:
        raise ValueError(f"{what} {addr_spec!r} is not a usable e-mail address: {error}") from error
    if not address.username or not address.domain or _CONTROL.search(addr_spec):
        raise ValueError(f"{what} {addr_spec!r} is not a usable e-mail address")
    return address
