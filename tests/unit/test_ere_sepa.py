"""SEPA payouts: planning transfers and carry-overs, and the pain.001 file that pays them.

The document is checked against the official ISO 20022 XSDs shipped in the `sepaxml` package
with two independent validators (xmlschema and libxml2 through lxml), and read back with lxml.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree  # type: ignore[import-untyped]

from proxy.ere.core.payout_plan import (
    CarryOver,
    CarryOverReason,
    CustomerBalance,
    PartnerPayout,
    PayoutModel,
    PayoutPlan,
    PayoutPlanError,
    plan_payouts,
)
from proxy.ere.core.sepa import (
    MAX_AMOUNT,
    BankAccount,
    CreditTransfer,
    Debtor,
    InvalidAccountError,
    PayeeKind,
    SepaDocument,
    SepaError,
    SepaValidationError,
    build_credit_transfer,
    end_to_end_id,
    sepa_text,
    validate_pain001,
)
from proxy.ere.jobs import files
from proxy.ere.jobs.payouts import write_sepa

VERSIONS = ["pain.001.001.03", "pain.001.001.09"]
US = Debtor("ERE Proxy B.V.", "NL91ABNA0417164300", "ABNANL2A")
JAN = BankAccount("Jan de Vries", "NL20INGB0001234567")
PIET = BankAccount("Piet Jansen", "NL18RABO0123459876", "RABONL2U")
ANNA = BankAccount("Anna Schmidt", "DE89370400440532013000")
PARTNER = BankAccount("Laadpaal Partner B.V.", "BE68539007547034")
CREATED = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
EXECUTION = date(2026, 4, 3)
SEPA_CHARSET = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]*")


def transfer(
    account: BankAccount, amount: str, payee: str, remittance: str = "ERE payout 2026Q1"
) -> CreditTransfer:
    return CreditTransfer(
        end_to_end_id("run-2026Q1-1", PayeeKind.CUSTOMER, payee),
        account,
        Decimal(amount),
        remittance,
    )


def build(transfers: list[CreditTransfer], **options: object) -> SepaDocument:
    arguments: dict[str, object] = {
        "execution_date": EXECUTION,
        "created_at": CREATED,
        "payout_run_id": "run-2026Q1-1",
    }
    arguments.update(options)
    return build_credit_transfer(US, transfers, **arguments)  # type: ignore[arg-type]


def official_schema_path(version: str) -> Path:
    return Path(str(importlib.resources.files("sepaxml").joinpath("schemas", f"{version}.xsd")))


def parse(document: SepaDocument) -> tuple[etree._Element, dict[str, str]]:
    root = etree.fromstring(document.xml)
    return root, {"p": f"urn:iso:std:iso:20022:tech:xsd:{document.pain_version}"}


THREE = [
    transfer(JAN, "12.34", "jan"),
    transfer(PIET, "0.01", "piet"),
    transfer(ANNA, "1000.00", "anna"),
]


# --- the document -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_document_validates_against_the_official_xsd_with_two_validators(version: str) -> None:
    document = build(THREE, pain_version=version)

    xmlschema.XMLSchema(str(official_schema_path(version))).validate(document.xml.decode("utf-8"))
    libxml2_schema = etree.XMLSchema(etree.parse(str(official_schema_path(version))))
    assert libxml2_schema.validate(etree.fromstring(document.xml)), libxml2_schema.error_log


@pytest.mark.parametrize("version", VERSIONS)
def test_document_read_back_has_the_amounts_count_and_control_sum(version: str) -> None:
    document = build(THREE, pain_version=version)
    root, ns = parse(document)

    header = root.find("p:CstmrCdtTrfInitn/p:GrpHdr", ns)
    assert header.findtext("p:MsgId", namespaces=ns) == document.message_id
    assert header.findtext("p:NbOfTxs", namespaces=ns) == "3"
    assert Decimal(header.findtext("p:CtrlSum", namespaces=ns)) == Decimal("1012.35")
    assert header.findtext("p:CreDtTm", namespaces=ns) == "2026-04-01T09:30:00+00:00"
    (block,) = root.findall("p:CstmrCdtTrfInitn/p:PmtInf", ns)
    assert block.findtext("p:NbOfTxs", namespaces=ns) == "3"
    assert Decimal(block.findtext("p:CtrlSum", namespaces=ns)) == Decimal("1012.35")
    assert block.findtext("p:DbtrAcct/p:Id/p:IBAN", namespaces=ns) == US.iban
    execution = block.find("p:ReqdExctnDt", ns)
    assert (execution.findtext("p:Dt", namespaces=ns) or execution.text) == "2026-04-03"

    transactions = block.findall("p:CdtTrfTxInf", ns)
    read_back = [
        (
            tx.findtext("p:PmtId/p:EndToEndId", namespaces=ns),
            tx.findtext("p:Cdtr/p:Nm", namespaces=ns),
            tx.findtext("p:CdtrAcct/p:Id/p:IBAN", namespaces=ns),
            tx.find("p:Amt/p:InstdAmt", ns).get("Ccy"),
            Decimal(tx.findtext("p:Amt/p:InstdAmt", namespaces=ns)),
            tx.findtext("p:RmtInf/p:Ustrd", namespaces=ns),
        )
        for tx in transactions
    ]
    assert read_back == [
        (t.end_to_end_id, t.creditor.holder_name, t.creditor.iban, "EUR", t.amount, t.remittance)
        for t in THREE
    ]
    assert document.transaction_count == 3 and document.control_sum == Decimal("1012.35")


def test_creditor_bic_is_optional() -> None:
    root, ns = parse(build(THREE))
    agents = [
        tx.findtext("p:CdtrAgt/p:FinInstnId/p:BIC", namespaces=ns)
        for tx in root.iter(f"{{{ns['p']}}}CdtTrfTxInf")
    ]
    assert agents == [None, "RABONL2U", None]


def test_same_run_gives_the_same_bytes_and_another_run_other_ids() -> None:
    first = build(THREE)
    assert build(THREE).xml == first.xml

    other = build(THREE, payout_run_id="run-2026Q1-2")
    assert other.message_id != first.message_id
    assert end_to_end_id("run-2026Q1-2", PayeeKind.CUSTOMER, "jan") != end_to_end_id(
        "run-2026Q1-1", PayeeKind.CUSTOMER, "jan"
    )


def test_derived_ids_fit_the_sepa_id_rules() -> None:
    identifier = end_to_end_id(
        "a run id far longer than thirty-five characters " * 3, PayeeKind.PARTNER, "p" * 200
    )
    assert len(identifier) == 35 and re.fullmatch(r"ERE[0-9A-F]{32}", identifier)
    assert end_to_end_id("r", PayeeKind.PARTNER, "x") != end_to_end_id("r", PayeeKind.CUSTOMER, "x")


def test_ibans_are_normalised_to_their_compact_form() -> None:
    spaced = BankAccount("Jan de Vries", "nl20 ingb 0001 2345 67")
    root, ns = parse(build([transfer(spaced, "5.00", "jan")]))
    assert root.findtext(".//p:CdtrAcct/p:Id/p:IBAN", namespaces=ns) == "NL20INGB0001234567"


# --- bad input: clear errors, nothing built ------------------------------------------------------


def test_invalid_iban_is_a_clear_error_naming_the_transfer() -> None:
    bad = transfer(BankAccount("Jan de Vries", "NL20INGB0001234568"), "5.00", "jan")
    with pytest.raises(
        InvalidAccountError,
        match=r"transfer 'ERE[0-9A-F]{32}': IBAN 'NL20INGB0001234568' is invalid",
    ):
        build([bad])


def test_every_bad_account_is_reported_at_once() -> None:
    transfers = [
        transfer(BankAccount("A", "NL00XXXX0000000000"), "1.00", "a"),
        transfer(PIET, "1.00", "piet"),
        transfer(BankAccount("B", "BR1500000000000010932840814P2"), "1.00", "b"),
        transfer(BankAccount("C", "NL20INGB0001234567", "NOTABIC"), "1.00", "c"),
    ]
    with pytest.raises(InvalidAccountError) as caught:
        build(transfers)
    message = str(caught.value)
    assert "'NL00XXXX0000000000' is invalid" in message
    assert "'BR1500000000000010932840814P2' is outside the SEPA zone" in message
    assert "BIC 'NOTABIC' is invalid" in message
    assert "NL18RABO0123459876" not in message


def test_invalid_debtor_account_is_rejected() -> None:
    with pytest.raises(InvalidAccountError, match="debtor: IBAN"):
        build_credit_transfer(
            Debtor("ERE Proxy B.V.", "NL91ABNA0417164301", "ABNANL2A"),
            THREE,
            execution_date=EXECUTION,
            created_at=CREATED,
            payout_run_id="r",
        )


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        (Decimal("0.005"), SepaError),
        (Decimal("0.00"), SepaError),
        (Decimal("-1.00"), SepaError),
        (MAX_AMOUNT + Decimal("0.01"), SepaError),
        (Decimal("NaN"), SepaError),
        (1.5, TypeError),
        (2, TypeError),
    ],
)
def test_amounts_must_be_positive_whole_cents_as_decimal(
    amount: object, error: type[Exception]
) -> None:
    bad = CreditTransfer(end_to_end_id("r", PayeeKind.CUSTOMER, "jan"), JAN, amount, "x")  # type: ignore[arg-type]
    with pytest.raises(error):
        build([bad])


def test_trailing_zeros_and_the_largest_amount_are_fine() -> None:
    document = build([transfer(JAN, "12.340", "jan"), transfer(PIET, str(MAX_AMOUNT), "piet")])
    assert document.control_sum == Decimal("12.34") + MAX_AMOUNT


@pytest.mark.parametrize(
    "identifier",
    ["", "x" * 36, "/leading", "trailing/", "double//slash", "ümlaut", "under_score", "new\nline"],
)
def test_end_to_end_ids_breaking_the_rules_are_rejected_not_altered(identifier: str) -> None:
    with pytest.raises(SepaError, match="end-to-end id"):
        build([CreditTransfer(identifier, JAN, Decimal("1.00"), "x")])


def test_structural_errors() -> None:
    with pytest.raises(SepaError, match="at least one transfer"):
        build([])
    with pytest.raises(SepaError, match="used twice"):
        build([transfer(JAN, "1.00", "jan"), transfer(PIET, "2.00", "jan")])
    with pytest.raises(SepaError, match="timezone-aware"):
        build(THREE, created_at=datetime(2026, 4, 1, 9, 30))
    with pytest.raises(SepaError, match="before the creation date"):
        build(THREE, execution_date=date(2026, 3, 31))
    with pytest.raises(SepaError, match="unsupported pain version"):
        build(THREE, pain_version="pain.001.001.02")


# --- hostile text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Jan & Piet <b>\"x\"</b> 'y'", "Jan + Piet b x /b 'y'"),
        ("Ærø Straße Ölçü", "AEro Strasse Olcu"),
        ("Мария Иванова", "Mariia Ivanova"),
        ("北京 Energie", "Bei Jing Energie"),
        ("tab\tand\r\nnewline\x00nul", "tab and newline nul"),
        ("price €10; 50% off_now!", "price EUR10 50 off now"),
    ],
)
def test_text_is_transliterated_into_the_sepa_character_set(text: str, expected: str) -> None:
    assert sepa_text(text, 140) == expected
    assert SEPA_CHARSET.fullmatch(expected)


@pytest.mark.parametrize("text", ["", "   ", "😀🔌", "\x00\x01"])
def test_text_without_any_latin_spelling_is_rejected(text: str) -> None:
    with pytest.raises(SepaError, match="no characters SEPA can carry"):
        sepa_text(text, 70, "creditor name")


def test_hostile_names_and_long_remittance_end_up_valid_and_within_limits() -> None:
    hostile = BankAccount('<![CDATA[x]]> &amp; "Ŝtrangé" Ñame ' + "w" * 100, "NL20INGB0001234567")
    long_remittance = "ERE payout 2026Q1 " + "ß" * 200
    document = build([transfer(hostile, "7.00", "h", long_remittance)])
    root, ns = parse(document)

    name = root.findtext(".//p:Cdtr/p:Nm", namespaces=ns)
    remittance = root.findtext(".//p:RmtInf/p:Ustrd", namespaces=ns)
    assert name.startswith("CDATA x +amp Strange Name w") and len(name) == 70
    assert remittance.startswith("ERE payout 2026Q1 ssss") and len(remittance) == 140
    assert SEPA_CHARSET.fullmatch(name) and SEPA_CHARSET.fullmatch(remittance)


def test_an_emoji_only_creditor_name_stops_the_build() -> None:
    with pytest.raises(SepaError, match="creditor name"):
        build([transfer(BankAccount("🙂", "NL20INGB0001234567"), "1.00", "x")])


# --- writing -------------------------------------------------------------------------------------


def test_write_sepa_writes_exactly_the_document_and_nothing_else(tmp_path: Path) -> None:
    document = build(THREE)
    target = tmp_path / "payout-2026Q1-run1.xml"

    write_sepa(target, document)

    assert target.read_bytes() == document.xml
    assert os.listdir(tmp_path) == [target.name]


def _tampered(document: SepaDocument, old: bytes, new: bytes) -> SepaDocument:
    assert old in document.xml
    return SepaDocument(
        xml=document.xml.replace(old, new, 1),
        pain_version=document.pain_version,
        message_id=document.message_id,
        transaction_count=document.transaction_count,
        control_sum=document.control_sum,
    )


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b'Ccy="EUR"', b'Ccy="euro"', "does not validate"),
        (b"<PmtMtd>TRF</PmtMtd>", b"<PmtMtd>CHK!</PmtMtd>", "does not validate"),
        (b"<PmtId>", b"<PmtId><InstrId>" + b"x" * 36 + b"</InstrId>", "does not validate"),
        (b"<NbOfTxs>3</NbOfTxs>", b"<NbOfTxs>4</NbOfTxs>", "group header says 4"),
        (b"</Document>", b"", "not well-formed"),
    ],
)
def test_a_document_failing_validation_leaves_no_file(
    tmp_path: Path, old: bytes, new: bytes, reason: str
) -> None:
    bad = _tampered(build(THREE), old, new)
    target = tmp_path / "payout.xml"

    with pytest.raises(SepaValidationError, match=reason):
        write_sepa(target, bad)

    assert os.listdir(tmp_path) == []


def test_a_failing_validation_keeps_the_previous_file(tmp_path: Path) -> None:
    good = build(THREE)
    target = tmp_path / "payout.xml"
    write_sepa(target, good)

    with pytest.raises(SepaValidationError):
        write_sepa(target, _tampered(good, b'Ccy="EUR"', b'Ccy="euro"'))

    assert target.read_bytes() == good.xml
    assert os.listdir(tmp_path) == [target.name]


def test_a_failing_write_leaves_neither_file_nor_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_sepa(tmp_path / "payout.xml", build(THREE))
    assert os.listdir(tmp_path) == []


def test_validate_refuses_a_document_in_another_namespace() -> None:
    document = build(THREE)
    relabelled = SepaDocument(
        document.xml, "pain.001.001.09", document.message_id, 3, document.control_sum
    )
    with pytest.raises(SepaValidationError, match="namespace"):
        validate_pain001(relabelled)


# --- planning ------------------------------------------------------------------------------------

RUN = "run-2026Q1-1"
MINIMUM = Decimal("5.00")
PARTNERS = {
    "installer": PartnerPayout("installer", PayoutModel.DIRECT),
    "cpo": PartnerPayout("cpo", PayoutModel.PARTNER_ACCOUNT, PARTNER),
    "cpo-without-account": PartnerPayout("cpo-without-account", PayoutModel.PARTNER_ACCOUNT),
}


def plan(balances: list[CustomerBalance], minimum: Decimal = MINIMUM) -> PayoutPlan:
    return plan_payouts(
        balances, PARTNERS, minimum=minimum, payout_run_id=RUN, remittance="ERE payout 2026Q1"
    )


def test_direct_customers_are_paid_to_their_own_accounts() -> None:
    result = plan(
        [
            CustomerBalance("jan", "installer", Decimal("12.34"), account=JAN),
            CustomerBalance("piet", None, Decimal("5.00"), account=PIET),
        ]
    )

    assert [
        (p.payee_kind, p.payee_id, p.transfer.amount, p.transfer.creditor) for p in result.transfers
    ] == [
        (PayeeKind.CUSTOMER, "jan", Decimal("12.34"), JAN),
        (PayeeKind.CUSTOMER, "piet", Decimal("5.00"), PIET),
    ]
    assert result.transfers[0].transfer.end_to_end_id == end_to_end_id(
        RUN, PayeeKind.CUSTOMER, "jan"
    )
    assert result.transfers[0].shares == (("jan", Decimal("12.34")),)
    assert result.carry_overs == ()


def test_amounts_below_the_minimum_carry_over_and_are_paid_once_they_add_up() -> None:
    first = plan([CustomerBalance("jan", "installer", Decimal("3.10"), account=JAN)])
    assert first.transfers == ()
    assert first.carry_overs == (CarryOver("jan", Decimal("3.10"), CarryOverReason.BELOW_MINIMUM),)

    second = plan(
        [
            CustomerBalance(
                "jan", "installer", Decimal("2.00"), carried_in=Decimal("3.10"), account=JAN
            )
        ]
    )
    assert [p.transfer.amount for p in second.transfers] == [Decimal("5.10")]
    assert second.carry_overs == ()


def test_partner_account_customers_are_pooled_into_one_transfer() -> None:
    result = plan(
        [
            CustomerBalance("c2", "cpo", Decimal("3.00")),
            CustomerBalance("c1", "cpo", Decimal("4.00"), carried_in=Decimal("0.50")),
            CustomerBalance("c3", "cpo", Decimal("-1.00")),
            CustomerBalance("c4", "cpo", Decimal("0.00")),
        ]
    )

    (pooled,) = result.transfers
    assert (pooled.payee_kind, pooled.payee_id) == (PayeeKind.PARTNER, "cpo")
    assert pooled.transfer.creditor == PARTNER and pooled.transfer.amount == Decimal("6.50")
    assert pooled.transfer.end_to_end_id == end_to_end_id(RUN, PayeeKind.PARTNER, "cpo")
    assert pooled.shares == (
        ("c1", Decimal("4.50")),
        ("c2", Decimal("3.00")),
        ("c3", Decimal("-1.00")),
    )
    assert result.carry_overs == ()


def test_a_pool_below_the_minimum_carries_each_customers_own_balance() -> None:
    result = plan(
        [
            CustomerBalance("c1", "cpo", Decimal("3.00")),
            CustomerBalance("c2", "cpo", Decimal("1.99")),
        ]
    )
    assert result.transfers == ()
    assert result.carry_overs == (
        CarryOver("c1", Decimal("3.00"), CarryOverReason.BELOW_MINIMUM),
        CarryOver("c2", Decimal("1.99"), CarryOverReason.BELOW_MINIMUM),
    )


def test_negative_balances_and_missing_accounts_carry_over_with_their_reason() -> None:
    result = plan(
        [
            CustomerBalance("minus", "installer", Decimal("-2.00"), account=JAN),
            CustomerBalance("no-iban", "installer", Decimal("20.00")),
            CustomerBalance("pooled", "cpo-without-account", Decimal("30.00")),
            CustomerBalance(
                "zero", None, Decimal("1.00"), carried_in=Decimal("-1.00"), account=PIET
            ),
        ]
    )
    assert result.transfers == ()
    assert result.carry_overs == (
        CarryOver("minus", Decimal("-2.00"), CarryOverReason.NOT_POSITIVE),
        CarryOver("no-iban", Decimal("20.00"), CarryOverReason.NO_ACCOUNT),
        CarryOver("pooled", Decimal("30.00"), CarryOverReason.NO_ACCOUNT),
    )


def test_a_zero_minimum_pays_every_positive_cent() -> None:
    result = plan(
        [CustomerBalance("jan", None, Decimal("0.01"), account=JAN)], minimum=Decimal("0")
    )
    assert [p.transfer.amount for p in result.transfers] == [Decimal("0.01")]


def test_plan_errors() -> None:
    with pytest.raises(PayoutPlanError, match="no payout settings"):
        plan([CustomerBalance("jan", "unknown-partner", Decimal("10.00"), account=JAN)])
    with pytest.raises(PayoutPlanError, match="twice"):
        plan(
            [
                CustomerBalance("jan", None, Decimal("1.00")),
                CustomerBalance("jan", None, Decimal("2.00")),
            ]
        )
    with pytest.raises(PayoutPlanError, match="whole cents"):
        plan([CustomerBalance("jan", None, Decimal("1.001"), account=JAN)])
    with pytest.raises(PayoutPlanError, match="whole cents"):
        plan(
            [
                CustomerBalance(
                    "jan", None, Decimal("1.00"), carried_in=Decimal("Infinity"), account=JAN
                )
            ]
        )
    with pytest.raises(PayoutPlanError, match="negative"):
        plan([], minimum=Decimal("-1.00"))
    with pytest.raises(TypeError, match="Decimal"):
        plan([CustomerBalance("jan", None, 1.5, account=JAN)])  # type: ignore[arg-type]


def test_a_plan_becomes_a_valid_document() -> None:
    result = plan(
        [
            CustomerBalance("jan", "installer", Decimal("12.34"), account=JAN),
            CustomerBalance("c1", "cpo", Decimal("40.00")),
            CustomerBalance("small", None, Decimal("1.00"), account=PIET),
        ]
    )
    document = build([p.transfer for p in result.transfers], payout_run_id=RUN)
    root, ns = parse(document)
    assert document.control_sum == result.total_transferred == Decimal("52.34")
    assert [e.text for e in root.iter(f"{{{ns['p']}}}EndToEndId")] == [
        end_to_end_id(RUN, PayeeKind.CUSTOMER, "jan"),
        end_to_end_id(RUN, PayeeKind.PARTNER, "cpo"),
    ]


cents = st.integers(min_value=-50_000, max_value=200_000).map(lambda c: Decimal(c).scaleb(-2))
balances_strategy = st.lists(
    st.tuples(
        st.sampled_from([None, "installer", "cpo", "cpo-without-account"]),
        cents,
        cents,
        st.booleans(),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(
    rows=balances_strategy,
    minimum=st.integers(min_value=0, max_value=5_000).map(lambda c: Decimal(c).scaleb(-2)),
)
def test_every_cent_is_accounted_for(
    rows: list[tuple[str | None, Decimal, Decimal, bool]], minimum: Decimal
) -> None:
    balances = [
        CustomerBalance(f"c{index:03}", partner, net, carried_in, JAN if has_account else None)
        for index, (partner, net, carried_in, has_account) in enumerate(rows)
    ]
    result = plan(balances, minimum=minimum)

    owed = sum((b.net + b.carried_in for b in balances), Decimal(0))
    assert result.total_transferred + result.total_carried_over == owed
    settled = [customer for p in result.transfers for customer, _ in p.shares]
    carried = [carry.customer_id for carry in result.carry_overs]
    nonzero = sorted(b.customer_id for b in balances if b.net + b.carried_in)
    assert sorted(settled + carried) == nonzero
    for planned in result.transfers:
        assert planned.transfer.amount >= minimum and planned.transfer.amount > 0
        assert sum((amount for _, amount in planned.shares), Decimal(0)) == planned.transfer.amount
    assert len({p.transfer.end_to_end_id for p in result.transfers}) == len(result.transfers)
    assert all(carry.amount for carry in result.carry_overs)


def test_document_for_a_large_run_stays_valid_and_exact() -> None:
    many = [
        CreditTransfer(
            end_to_end_id(RUN, PayeeKind.CUSTOMER, f"c{i}"),
            JAN,
            Decimal(i + 1).scaleb(-2) + 5,
            "ERE",
        )
        for i in range(2_000)
    ]
    document = build(many, created_at=CREATED - timedelta(days=1))
    root, ns = parse(document)
    amounts = [Decimal(e.text) for e in root.iter(f"{{{ns['p']}}}InstdAmt")]
    assert len(amounts) == 2_000
    assert (
        sum(amounts, Decimal(0))
        == document.control_sum
        == sum((t.amount for t in many), Decimal(0))
    )
