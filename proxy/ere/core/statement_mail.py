"""Payout statement e-mails: one partner-branded message per customer per quarter.

`render_text` and `render_html` are pure and show the same content: the customer's sessions
(date, kWh); each statement line with its own kWh, ERE, price per ERE, gross, fee rate (and why:
`fee_rate_text`), fee and net, a correction naming the quarter it corrects and the sessions
whose kWh changed; the totals (gross, our fee with the VAT inside it, net); what was carried in
from, or over to, another quarter (an amount still owed says so, and why); and the fee as an
invoice or credit note (`proxy.ere.core.fee_invoice`). A price is shown per line (or once, as
`unit_price`, for a statement without lines), so no statement shows a price it did not apply. The figures are
rendered as given; the statement only checks that they agree (net = gross - fee). Display
rounding (kWh to 0.001, ERE and euros to 0.01, a unit price to at most 4 decimals) is half up
and never feeds back into any amount.

`build_statement_message` wraps both renderings in a multipart/alternative `EmailMessage` with a
Message-ID derived from the statement id. Everything here is pure; sending the messages (SMTP,
or `.eml` files) is `proxy.ere.jobs.statement_delivery`.

Hostile input: everything a customer or partner supplies is HTML-escaped in the HTML body.
The brand colour must be `#rrggbb` and the logo URL `https://`, or the branding is refused,
because neither can be made safe by escaping alone (CSS and URL contexts). Names, subject and
other one-line fields never carry line breaks or other control characters, in headers or
bodies: these become spaces, so a name cannot inject a header or fake a line of the
statement. Only the partner's footer keeps its line breaks.
"""

from __future__ import annotations

import enum
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import urlsplit

from proxy.ere.core.fee_invoice import FeeInvoice
from proxy.ere.core.fees import DEFAULT_FEE_RATE, FEE_FLOOR_RATE

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
_WH = Decimal("0.001")
_PRICE_STEP = Decimal("0.0001")
_ZERO = Decimal(0)
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MESSAGE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PricingBasis(enum.Enum):
    """What the unit price is quoted per."""

    PER_ERE = "ERE"
    PER_KWH = "kWh"


@dataclass(frozen=True, slots=True)
class PartnerBranding:
    """How a partner's statements look: name, `#rrggbb` colour, optional https logo, footer.

    Raises `ValueError` for a colour or logo URL that could not be used safely.
    """

    display_name: str
    colour: str = "#1F6F5C"
    logo_url: str | None = None
    footer_text: str = ""

    def __post_init__(self) -> None:
        if not _COLOUR.fullmatch(self.colour):
            raise ValueError(f"brand colour must look like #1a2b3c, got {self.colour!r}")
        if self.logo_url is not None:
            parts = urlsplit(self.logo_url)
            if (
                parts.scheme != "https"
                or not parts.netloc
                or re.search(r"[\s\x00-\x1f\x7f]", self.logo_url)
            ):
                raise ValueError(
                    f"logo URL must be an https:// URL without spaces, got {self.logo_url!r}"
                )


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One charging session on a statement: the day it took place and its kWh."""

    charged_on: date
    kwh: Decimal


@dataclass(frozen=True, slots=True)
class FigureLine:
    """One statement line: a delivery quarter's energy, or a correction of one closed earlier.

    `fee_rate_shown` is the rate with its reason (`fee_rate_text`); empty: the bare rate.
    `corrected` lists, for a correction, each session whose kWh changed and by how much.
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

    @property
    def label(self) -> str:
        kind = "correction of" if self.correction else "delivered in"
        return f"{kind} {_header_text(self.delivery_quarter)}"

    def figures(self) -> str:
        rate = _header_text(self.fee_rate_shown) or _percent(self.fee_rate)
        return (
            f"{_kwh(self.kwh)} kWh  {_fixed(self.ere, _CENT)} ERE  "
            f"{_unit_price(self.eur_per_ere)} per ERE  {_euro(self.gross)}  "
            f"fee {rate}  {_euro(-self.fee)}  net {_euro(self.net)}"
        )


def fee_rate_text(rate: Decimal, active_referrals: int | None, referral_step: Decimal) -> str:
    """The fee rate and why, e.g. "16 % (20 % less 2 active referrals × 2 %, floor 10 %)".

    `active_referrals` None: not known for this line (a lower rate then names referral
    discounts in general).
    """
    if active_referrals:
        plural = "" if active_referrals == 1 else "s"
        why = (
            f"{_percent(DEFAULT_FEE_RATE)} less {active_referrals} active referral{plural}"
            f" × {_percent(referral_step)}"
        )
    elif rate != DEFAULT_FEE_RATE:
        why = f"{_percent(DEFAULT_FEE_RATE)} less referral discounts"
    else:
        return _percent(rate)
    return f"{_percent(rate)} ({why}, floor {_percent(FEE_FLOOR_RATE)})"


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


def render_text(statement: PayoutStatement, branding: PartnerBranding) -> str:
    """The plain-text body of a statement."""
    rows = _summary_rows(statement)
    width = max(len(label) for label, _ in rows)
    lines = [
        _header_text(branding.display_name),
        f"ERE payout statement, {_header_text(statement.period_label)}",
        "",
        f"Dear {_header_text(statement.customer_name)},",
        "",
        "Your charging sessions:",
        "",
        f"  {'Date':<12}{'kWh':>14}",
    ]
    lines += [
        f"  {line.charged_on.isoformat():<12}{_kwh(line.kwh):>14}" for line in statement.sessions
    ]
    if not statement.sessions:
        lines.append("  (no sessions this quarter)")
    lines += [f"  {'Total':<12}{_kwh(statement.total_kwh):>14}", ""]
    if statement.lines:
        lines += ["Statement lines:", ""]
        for figures in statement.lines:
            lines += [f"  {figures.label}: {figures.figures()}"]
            lines += [f"    {change}" for change in _changes(figures)]
        lines.append("")
    lines += [f"{label + ':':<{width + 2}} {value}" for label, value in rows]
    lines += ["", note] if (note := _carry_note(statement)) else []
    if statement.invoice is not None:
        rows = statement.invoice.rows()
        width = max(len(label) for label, _ in rows)
        lines += ["", f"{_header_text(statement.invoice.title)} for our fee"]
        lines += [f"{label + ':':<{width + 2}} {_header_text(value)}" for label, value in rows]
    if branding.footer_text:
        lines += ["", "--", *(_header_text(line) for line in branding.footer_text.splitlines())]
    return "\n".join(lines) + "\n"


def render_html(statement: PayoutStatement, branding: PartnerBranding) -> str:
    """The HTML body of a statement; every supplied text is escaped."""
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
            f"<tr><td {cell}>{line.charged_on.isoformat()}</td><td {number_cell}>{_kwh(line.kwh)}</td></tr>"
            for line in statement.sessions
        )
        or f'<tr><td {cell} colspan="2">(no sessions this quarter)</td></tr>'
    )
    summary_rows = "".join(
        f"<tr><td {cell}>{escaped(label)}</td><td {number_cell}>{escaped(value)}</td></tr>"
        for label, value in _summary_rows(statement)
    )
    line_rows = "".join(
        f"<tr><td {cell}>{escaped(figures.label)}</td><td {number_cell}>{escaped(figures.figures())}"
        + "".join(f"<br>{escaped(change)}" for change in _changes(figures))
        + "</td></tr>"
        for figures in statement.lines
    )
    lines_table = (
        f'<table style="border-collapse:collapse;margin-top:16px">{line_rows}</table>\n'
        if line_rows
        else ""
    )
    note = f"<p>{escaped(text)}</p>" if (text := _carry_note(statement)) else ""
    invoice = statement.invoice
    invoice_table = (
        f'<h2 style="font-size:16px">{escaped(invoice.title)} for our fee</h2>'
        '<table style="border-collapse:collapse">'
        + "".join(
            f"<tr><td {cell}>{escaped(label)}</td><td {number_cell}>{escaped(value)}</td></tr>"
            for label, value in invoice.rows()
        )
        + "</table>\n"
        if invoice is not None
        else ""
    )
    footer = (
        f'<p style="color:#666;font-size:12px">{_multiline_html(branding.footer_text)}</p>'
        if branding.footer_text
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>ERE payout statement {escaped(statement.period_label)}</title></head>\n"
        '<body style="margin:0;padding:0;font-family:Arial,Helvetica,sans-serif;color:#222">\n'
        f'<div style="background:{colour};color:{ink};padding:16px 24px;font-size:20px">'
        f"{logo}<span>{escaped(branding.display_name)}</span></div>\n"
        '<div style="padding:16px 24px">\n'
        f'<h1 style="font-size:18px">ERE payout statement, {escaped(statement.period_label)}</h1>\n'
        f"<p>Dear {escaped(statement.customer_name)},</p>\n"
        "<p>Your charging sessions:</p>\n"
        '<table style="border-collapse:collapse">'
        f"<tr><th {cell}>Date</th><th {number_cell}>kWh</th></tr>{session_rows}"
        f"<tr><th {cell}>Total</th><th {number_cell}>{_kwh(statement.total_kwh)}</th></tr></table>\n"
        f"{lines_table}"
        f'<table style="border-collapse:collapse;margin-top:16px">{summary_rows}</table>\n'
        f"{note}{invoice_table}{footer}</div>\n</body></html>\n"
    )


def build_statement_message(
    statement: PayoutStatement, branding: PartnerBranding, *, sender: str, dated: datetime
) -> EmailMessage:
    """A multipart/alternative e-mail (text, then HTML) from the partner to the customer.

    `sender` is the From address and `dated` (timezone-aware) the Date header. The Message-ID
    is derived from the statement id, so a statement built twice has the same one. Raises
    `ValueError` for an unusable e-mail address or a naive `dated`.
    """
    if dated.utcoffset() is None:
        raise ValueError("dated must be timezone-aware")
    from_address = _address(branding.display_name, sender, "sender")
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = _address(statement.customer_name, statement.customer_email, "customer e-mail")
    message["Subject"] = _header_text(
        f"{branding.display_name}: ERE payout statement {statement.period_label}"
    )
    message["Date"] = format_datetime(dated)
    message["Message-ID"] = f"<{message_token(statement.statement_id)}@{from_address.domain}>"
    message.set_content(render_text(statement, branding), cte="quoted-printable")
    message.add_alternative(render_html(statement, branding), subtype="html")
    return message


def message_token(statement_id: str) -> str:
    """The local part of a statement's Message-ID (and the name of its `.eml` file).

    The statement id itself when it is a safe token (1-64 characters `A-Z a-z 0-9 . _ -`,
    starting with a letter or digit), else `statement-` and 32 hex digits of its SHA-256.
    """
    if _MESSAGE_TOKEN.fullmatch(statement_id):
        return statement_id
    return "statement-" + hashlib.sha256(statement_id.encode("utf-8")).hexdigest()[:32]


def _summary_rows(statement: PayoutStatement) -> list[tuple[str, str]]:
    rows = [
        ("Energy", f"{_kwh(statement.stated_kwh)} kWh"),
        ("ERE earned", f"{_fixed(statement.ere, _CENT)} ERE"),
    ]
    if statement.unit_price is not None:
        price = _unit_price(statement.unit_price)
        rows.append(("Price", f"{price} per {statement.pricing_basis.value}"))
    rows += [
        ("Gross", _euro(statement.gross)),
        (f"Fee (incl. {_euro(statement.fee_vat)} VAT)", _euro(-statement.fee)),
        ("Net", _euro(statement.net)),
    ]
    if statement.carried_in:
        rows.append(("Carried in from earlier quarters", _euro(statement.carried_in)))
    if statement.carried_over:
        rows.append(("Carried over to next quarter", _euro(-statement.carried_over)))
    rows.append(("Paid out", _euro(statement.paid_out)))
    if statement.paid_to:
        rows.append(("Paid to", statement.paid_to))
    return rows


def _changes(figures: FigureLine) -> list[str]:
    return [
        f"session {session_id}: {_signed_kwh(kwh)} kWh" for session_id, kwh in figures.corrected
    ]


def _carry_note(statement: PayoutStatement) -> str:
    """Why an amount was carried over, and, for one still owed, that it is owed."""
    note = _header_text(statement.carry_over_note or "")
    if statement.carried_over > 0:
        return f"{_euro(statement.carried_over)} is still owed to you: {note or 'carried over'}."
    if statement.carried_over < 0:
        amount = _euro(-statement.carried_over)
        return f"{amount} is set off against later quarters: {note or 'carried over'}."
    return note


def _percent(rate: Decimal) -> str:
    return f"{(rate * 100).normalize():f} %"


def _signed_kwh(value: Decimal) -> str:
    return _kwh(value) if value < 0 else f"+{_kwh(value)}"


def _require_decimal(value: object, name: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def _fixed(value: Decimal, step: Decimal) -> str:
    rounded = value.quantize(step, rounding=ROUND_HALF_UP)
    return f"{rounded if rounded else rounded.copy_abs():,f}"


def _kwh(value: Decimal) -> str:
    return _fixed(value, _WH)


def _euro(amount: Decimal) -> str:
    text = _fixed(abs(amount), _CENT)
    return f"-€{text}" if amount < 0 else f"€{text}"


def _unit_price(price: Decimal) -> str:
    text = _fixed(abs(price), _PRICE_STEP).rstrip("0")
    whole, _, fraction = text.partition(".")
    text = f"{whole}.{fraction:0<2}"
    return f"-€{text}" if price < 0 else f"€{text}"


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
