"""What a payout statement says, in Dutch (the default) and in English, and how it writes numbers.

Customers are Dutch households: statements, their e-mails and invoices speak Dutch with nl-NL
formats (`€ 3,99`, `€ -3,99`, `1.234,56`, `12,345 kWh`, `20%`, dates `25-06-2026`) unless the
customer or their partner chose English (`€3.99`, `-€3.99`, `1,234.56`, `12.345 kWh`, `20 %`,
ISO dates `2026-06-25`). `texts_for(language)` gives the `StatementTexts` of a language: its
phrases (format strings with named fields) and its formatters. The layout of a statement is
`proxy.ere.core.statement_mail`; this module only knows words and number formats.

Pure. Formatting rounds half up for display only (kWh to 0.001, ERE and euros to 0.01, a unit
price to at most 4 decimals) and never feeds back into any amount. Errors: `ValueError` for a
language other than `nl` or `en`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

from proxy.ere.core.fees import DEFAULT_FEE_RATE, FEE_FLOOR_RATE
from proxy.ere.core.quarters import Quarter

__all__ = [
    "DEFAULT_LANGUAGE",
    "DUTCH",
    "ENGLISH",
    "LANGUAGES",
    "Language",
    "StatementTexts",
    "fee_rate_text",
    "texts_for",
]

Language = Literal["nl", "en"]
LANGUAGES: Final[tuple[Language, ...]] = ("nl", "en")
DEFAULT_LANGUAGE: Final[Language] = "nl"

_CENT = Decimal("0.01")
_WH = Decimal("0.001")
_PRICE_STEP = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class StatementTexts:
    """The phrases of one language and its number and date formats.

    Phrases with `{…}` are format strings; the field names say what goes in.
    """

    language: Language
    decimal_mark: str
    group_mark: str
    euro_sign: str  # before the amount, with its space if the language wants one
    minus_before_sign: bool  # "-€3.99" (True) or "€ -3,99" (False)
    percent_sign: str
    months: tuple[str, ...]  # for the period of a statement; empty: numeric dates
    # the statement
    title: str
    subject: str  # {brand} {title} {period}
    period: str  # {quarter} {first} {last}
    greeting: str  # {name}
    sessions_heading: str
    date_heading: str
    total: str
    no_sessions: str
    lines_heading: str
    delivered_in: str  # {quarter}
    correction_of: str  # {quarter}
    line_figures: str  # {kwh} {ere} {price} {gross} {rate} {fee} {net}
    session_change: str  # {session} {kwh}
    energy: str
    ere_earned: str
    price: str
    price_per: str  # {price} {basis}
    gross: str
    fee_with_vat: str  # {vat}
    net: str
    carried_in: str
    carried_over: str
    paid_out: str
    paid_to: str
    still_owed: str  # {amount} {why}
    set_off: str  # {amount} {why}
    carried: str
    below_minimum: str
    not_positive: str
    no_account: str
    # the fee rate and why
    fee_rate_reason: str  # {rate} {why} {floor}
    less_referrals: str  # {base} {count} {referrals} {step}
    less_discounts: str  # {base}
    referral: str
    referrals: str
    # the invoice of our fee
    invoice_heading: str  # {title}
    invoice: str  # {number}
    credit_note: str  # {number}
    invoice_from: str
    kvk: str
    vat_number: str
    invoice_date: str
    fee_excl_vat: str
    vat: str  # {rate}
    fee_incl_vat: str

    def number(self, value: Decimal, step: Decimal) -> str:
        """`value` rounded half up to `step`, with this language's group and decimal marks."""
        rounded = value.quantize(step, rounding=ROUND_HALF_UP)
        text = f"{rounded if rounded else rounded.copy_abs():,f}"
        return text.translate({ord(","): self.group_mark, ord("."): self.decimal_mark})

    def kwh(self, value: Decimal) -> str:
        """Energy to the Wh: `1.234,567` / `1,234.567` (no unit)."""
        return self.number(value, _WH)

    def signed_kwh(self, value: Decimal) -> str:
        """A change of energy, always with its sign: `+40,000`, `-2,500`."""
        shown = self.kwh(value)
        return shown if shown.startswith("-") else f"+{shown}"

    def ere(self, value: Decimal) -> str:
        return self.number(value, _CENT)

    def euro(self, amount: Decimal) -> str:
        """`€ 1.234,56` / `€ -3,99` (nl) or `€1,234.56` / `-€3.99` (en)."""
        return self._money(self.number(amount, _CENT))

    def unit_price(self, price: Decimal) -> str:
        """A price with 2 to 4 decimals: `€ 0,2833`, `€ 1,00` / `€0.2833`, `€1.00`."""
        shown = self.number(price, _PRICE_STEP)
        whole, _, fraction = shown.partition(self.decimal_mark)
        return self._money(f"{whole}{self.decimal_mark}{fraction.rstrip('0'):0<2}")

    def percent(self, rate: Decimal) -> str:
        """A rate as a percentage: 0.175 is `17,5%` / `17.5 %`."""
        shown = f"{(rate * 100).normalize():f}".replace(".", self.decimal_mark)
        return f"{shown}{self.percent_sign}"

    def day(self, value: date) -> str:
        """`25-06-2026` (nl) or `2026-06-25` (en)."""
        return value.isoformat() if self.language == "en" else f"{value:%d-%m-%Y}"

    def period_of(self, quarter: Quarter) -> str:
        """A quarter with its first and last day, e.g. `2026Q2 (01-04-2026 t/m 30-06-2026)`."""
        first, last = quarter.first_day, quarter.last_day
        if self.months:
            shown = [f"{d.day:02d} {self.months[d.month - 1]} {d.year}" for d in (first, last)]
        else:
            shown = [self.day(first), self.day(last)]
        return self.period.format(quarter=quarter, first=shown[0], last=shown[1])

    @property
    def carry_notes(self) -> dict[str, str]:
        """Why an amount was carried over, by the payout plan's reason code."""
        return {
            "below-minimum": self.below_minimum,
            "not-positive": self.not_positive,
            "no-account": self.no_account,
        }

    def carry_note(self, reason: str) -> str | None:
        """Why an amount was carried over, for a payout plan's reason (None: unknown reason)."""
        return self.carry_notes.get(reason)

    def _money(self, number: str) -> str:
        if number.startswith("-") and self.minus_before_sign:
            return f"-{self.euro_sign}{number[1:]}"
        return f"{self.euro_sign}{number}"


DUTCH: Final = StatementTexts(
    language="nl",
    decimal_mark=",",
    group_mark=".",
    euro_sign="€ ",
    minus_before_sign=False,
    percent_sign="%",
    months=(),
    title="ERE-uitbetalingsoverzicht",
    subject="{brand}: {title} {period}",
    period="{quarter} ({first} t/m {last})",
    greeting="Beste {name},",
    sessions_heading="Uw laadsessies:",
    date_heading="Datum",
    total="Totaal",
    no_sessions="(geen laadsessies dit kwartaal)",
    lines_heading="Specificatie:",
    delivered_in="geleverd in {quarter}",
    correction_of="correctie van {quarter}",
    line_figures="{kwh} kWh  {ere} ERE  {price} per ERE  {gross}  vergoeding {rate}  {fee}  netto {net}",
    session_change="sessie {session}: {kwh} kWh",
    energy="Energie",
    ere_earned="Verdiende ERE",
    price="Prijs",
    price_per="{price} per {basis}",
    gross="Bruto",
    fee_with_vat="Vergoeding (incl. {vat} btw)",
    net="Netto",
    carried_in="Overgebracht uit eerdere kwartalen",
    carried_over="Doorgeschoven naar volgend kwartaal",
    paid_out="Uitbetaald",
    paid_to="Uitbetaald aan",
    still_owed="U hebt nog {amount} van ons tegoed: {why}.",
    set_off="{amount} wordt verrekend met latere kwartalen: {why}.",
    carried="doorgeschoven",
    below_minimum="minder dan het minimumbedrag voor uitbetaling; het wordt met een later kwartaal uitbetaald",
    not_positive="een correctie naar beneden; die wordt verrekend met latere kwartalen",
    no_account="nog geen bankrekening bekend; het wordt uitbetaald zodra die bekend is",
    fee_rate_reason="{rate} ({why}, minimaal {floor})",
    less_referrals="{base} min {count} actieve {referrals} × {step}",
    less_discounts="{base} min kortingen voor doorverwijzingen",
    referral="doorverwijzing",
    referrals="doorverwijzingen",
    invoice_heading="{title} voor onze vergoeding",
    invoice="Factuur {number}",
    credit_note="Creditnota {number}",
    invoice_from="Van",
    kvk="KvK",
    vat_number="Btw-nummer",
    invoice_date="Factuurdatum",
    fee_excl_vat="Vergoeding excl. btw",
    vat="Btw {rate}",
    fee_incl_vat="Vergoeding incl. btw",
)

ENGLISH: Final = StatementTexts(
    language="en",
    decimal_mark=".",
    group_mark=",",
    euro_sign="€",
    minus_before_sign=True,
    percent_sign=" %",
    months=(
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    title="ERE payout statement",
    subject="{brand}: {title} {period}",
    period="{quarter} ({first} – {last})",
    greeting="Dear {name},",
    sessions_heading="Your charging sessions:",
    date_heading="Date",
    total="Total",
    no_sessions="(no sessions this quarter)",
    lines_heading="Statement lines:",
    delivered_in="delivered in {quarter}",
    correction_of="correction of {quarter}",
    line_figures="{kwh} kWh  {ere} ERE  {price} per ERE  {gross}  fee {rate}  {fee}  net {net}",
    session_change="session {session}: {kwh} kWh",
    energy="Energy",
    ere_earned="ERE earned",
    price="Price",
    price_per="{price} per {basis}",
    gross="Gross",
    fee_with_vat="Fee (incl. {vat} VAT)",
    net="Net",
    carried_in="Carried in from earlier quarters",
    carried_over="Carried over to next quarter",
    paid_out="Paid out",
    paid_to="Paid to",
    still_owed="{amount} is still owed to you: {why}.",
    set_off="{amount} is set off against later quarters: {why}.",
    carried="carried over",
    below_minimum="below the minimum payout; it is paid with a later quarter",
    not_positive="a correction downwards; it is settled against later quarters",
    no_account="no bank account on file yet; it is paid once one is known",
    fee_rate_reason="{rate} ({why}, floor {floor})",
    less_referrals="{base} less {count} active {referrals} × {step}",
    less_discounts="{base} less referral discounts",
    referral="referral",
    referrals="referrals",
    invoice_heading="{title} for our fee",
    invoice="Invoice {number}",
    credit_note="Credit note {number}",
    invoice_from="From",
    kvk="KvK",
    vat_number="VAT number",
    invoice_date="Invoice date",
    fee_excl_vat="Fee without VAT",
    vat="VAT {rate}",
    fee_incl_vat="Fee with VAT",
)

_BY_LANGUAGE: Final[dict[str, StatementTexts]] = {DUTCH.language: DUTCH, ENGLISH.language: ENGLISH}


def texts_for(language: str) -> StatementTexts:
    """The texts of `language` (`nl` or `en`); `ValueError` for any other."""
    try:
        return _BY_LANGUAGE[language]
    except KeyError:
        raise ValueError(
            f"language {language!r} is not supported; use one of {', '.join(LANGUAGES)}"
        ) from None


def fee_rate_text(
    rate: Decimal,
    active_referrals: int | None,
    referral_step: Decimal,
    language: str = DEFAULT_LANGUAGE,
) -> str:
    """The fee rate and why, e.g. "16% (20% min 2 actieve doorverwijzingen × 2%, minimaal 10%)"
    or, in English, "16 % (20 % less 2 active referrals × 2 %, floor 10 %)".

    `active_referrals` None: not known for this line (a lower rate then names referral
    discounts in general). The default rate alone needs no reason.
    """
    texts = texts_for(language)
    base = texts.percent(DEFAULT_FEE_RATE)
    if active_referrals:
        why = texts.less_referrals.format(
            base=base,
            count=active_referrals,
            referrals=texts.referral if active_referrals == 1 else texts.referrals,
            step=texts.percent(referral_step),
        )
    elif rate != DEFAULT_FEE_RATE:
        why = texts.less_discounts.format(base=base)
    else:
        return texts.percent(rate)
    return texts.fee_rate_reason.format(
        rate=texts.percent(rate), why=why, floor=texts.percent(FEE_FLOOR_RATE)
    )
