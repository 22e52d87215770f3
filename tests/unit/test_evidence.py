"""Meter evidence: OCMF parsing, signature checks, the MID list and classification, no I/O.

Real records and the specification's example are in `testkit.ocmf_records`.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proxy.capture.evidence import (
    EvidenceError,
    MeterClass,
    OcmfRecord,
    SignedMeterData,
    classify,
    load_mid_meters,
    load_public_key,
    parse_ocmf,
    parse_signed_meter_value,
    verify,
)
from proxy.capture.evidence.ocmf import MAX_METER_TYPE_CHARS
from testkit.ocmf_records import (
    DZG_EBEE,
    DZG_EBEE_KEY,
    EBZ_KEY,
    EBZ_T117,
    EBZ_T120,
    KEBA,
    KEBA_KEY,
    KEBA_TAMPERED,
    NANO_K1,
    NANO_K1_KEY,
    NZR_BRAINPOOL,
    NZR_BRAINPOOL_KEY,
    NZR_P384,
    NZR_P384_KEY,
    TWIN,
    TWIN_KEY,
    spec_example,
)

# --- real records ---------------------------------------------------------------------------

REAL = [
    pytest.param(KEBA, KEBA_KEY, id="keba-p256-default-algorithm"),
    pytest.param(NZR_BRAINPOOL, NZR_BRAINPOOL_KEY, id="nzr-brainpool256"),
    pytest.param(NZR_P384, NZR_P384_KEY, id="nzr-p384"),
    pytest.param(EBZ_T117, EBZ_KEY, id="ebz-p192"),
    pytest.param(EBZ_T120, EBZ_KEY, id="ebz-p192-fixed-width-der"),
    pytest.param(DZG_EBEE, DZG_EBEE_KEY, id="dzg-spaced-hex-key"),
    pytest.param(NANO_K1, NANO_K1_KEY, id="dzg-secp256k1-base64-key"),
    pytest.param(TWIN, TWIN_KEY, id="twincharger-base64-signature"),
]


# --- helpers for records signed here -------------------------------------------------------


def make_payload(**overrides: object) -> str:
    payload: dict[str, object] = {
        "FV": "1.0",
        "GI": "Test Wallbox",
        "GS": "GW-1",
        "PG": "T7",
        "MV": "Iskra",
        "MM": "WM3M4C",
        "MS": "87654321",
        "IS": False,
        "IT": "NONE",
        "RD": [
            {
                "TM": "2026-03-01T08:00:00,000+0100 S",
                "TX": "B",
                "RV": 1234.5,
                "RI": "1-b:1.8.0",
                "RU": "kWh",
                "RT": "AC",
                "EF": "",
                "ST": "G",
            }
        ],
    }
    payload.update(overrides)
    return json.dumps(payload, separators=(",", ":"))


def sign(
    payload: str,
    key: ec.EllipticCurvePrivateKey,
    algorithm: str | None,
    *,
    encoding: str = "hex",
) -> str:
    der = key.sign(payload.encode(), ec.ECDSA(hashes.SHA256()))
    data = der.hex().upper() if encoding == "hex" else base64.b64encode(der).decode()
    section: dict[str, str] = {"SD": data}
    if algorithm:
        section["SA"] = algorithm
    if encoding != "hex":
        section["SE"] = encoding
    return f"OCMF|{payload}|{json.dumps(section)}"


def der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- real records: parse and verify --------------------------------------------------------


@pytest.mark.parametrize(("text", "key"), REAL)
def test_real_records_verify_with_their_published_keys(text: str, key: str) -> None:
    record = parse_ocmf(text)
    assert verify(record, key) is True


@pytest.mark.parametrize(("text", "key"), REAL)
def test_real_records_fail_when_a_reading_is_changed(text: str, key: str) -> None:
    record = parse_ocmf(text)
    tampered = parse_ocmf(
        text.replace('"TX":"B"', '"TX":"C"')
        .replace('"TX" : "B"', '"TX" : "C"')
        .replace('"TX": "B"', '"TX": "C"')
    )
    assert tampered.payload != record.payload
    assert verify(tampered, key) is False


def test_transparency_software_fail_sample_does_not_verify() -> None:
    assert verify(parse_ocmf(KEBA_TAMPERED), KEBA_KEY) is False


def test_keba_record_fields_and_readings() -> None:
    record = parse_ocmf(KEBA)
    assert (record.gateway_id, record.gateway_serial, record.gateway_version) == (
        "KEBA_KCP30",
        "17619300",
        "2.8.5",
    )
    assert record.pagination == "T32" and record.format_version == "1.0"
    assert record.meter_serial is None and record.identified is False
    assert record.identification_flags == (
        "RFID_NONE",
        "OCPP_NONE",
        "ISO15118_NONE",
        "PLMN_NONE",
    )
    assert record.signature_algorithm is None and record.algorithm == "ECDSA-secp256r1-SHA256"
    begin, end = record.readings
    assert begin.value == Decimal("0.2596") and isinstance(begin.value, Decimal)
    assert begin.wh == Decimal("259.6000") and end.wh == Decimal("259.7000")
    assert (begin.event, end.event) == ("B", "E")
    assert begin.time == datetime(2019, 8, 13, 10, 3, 15, tzinfo=UTC)
    assert (begin.time_status, end.time_status) == ("I", "R")
    assert begin.obis == "1-b:1.8.0" and begin.unit == "kWh" and begin.billable


def test_meter_identification_is_extracted() -> None:
    record = parse_ocmf(NZR_BRAINPOOL)
    assert (
        record.meter_vendor,
        record.meter_model,
        record.meter_serial,
        record.meter_firmware,
    ) == ("NZR", "EcoCount SL", "12345678", "1.11")
    assert record.signature_algorithm == "ECDSA-brainpoolP256r1-SHA256"
    (reading,) = record.readings
    assert reading.wh == Decimal(1833) and reading.current_type == "AC"


def test_lenient_real_world_spellings_are_understood() -> None:
    nano = parse_ocmf(NANO_K1)
    assert nano.readings[0].value == Decimal("9.038") and nano.readings[0].wh == Decimal("9038.000")
    assert nano.charge_point_type == "CBIDC" and nano.identification_level == "VERIFIED"
    twin = parse_ocmf(TWIN)
    assert twin.format_version == "1.0" and twin.charge_point_type == "0"
    assert [r.wh for r in twin.readings] == [Decimal("0.0") * 1000, Decimal("1304.000")]
    assert twin.readings[0].time == datetime(
        2021, 4, 9, 9, 9, 51, tzinfo=timezone(timedelta(hours=2))
    )


def test_specification_example_parses_with_whitespace_kept_for_signing() -> None:
    text = spec_example()
    record = parse_ocmf(text)
    assert record.payload.startswith("{\n") and record.payload == text.split("|")[1]
    assert record.meter_model == "EEM-350-D-MCB" and record.meter_vendor == "Phoenix Contact"
    assert len(record.readings) == 6
    assert record.readings[0].wh == Decimal("2935600.000")
    assert (
        record.readings[-1].obis == "01-0B:B3.08.00*FF" and record.readings[-1].current_type == "DC"
    )
    assert len(record.signature) == 48


def test_omitted_fields_are_carried_from_the_previous_reading() -> None:
    payload = make_payload(
        RD=[
            {
                "TM": "2026-03-01T08:00:00,000+0100 S",
                "TX": "B",
                "RV": 10,
                "RI": "1-0:1.8.0",
                "RU": "kWh",
                "ST": "G",
            },
            {"RV": 4.4, "RI": "1-0:2.8.0"},
            {"TM": "2026-03-01T09:00:00,000+0100 S", "TX": "E", "RV": 12},
            {"ST": "M", "TX": "X"},
        ]
    )
    first, second, third, event = parse_ocmf(f'OCMF|{payload}|{{"SD":"00"}}').readings
    assert second.time == first.time and second.unit == "kWh" and second.obis == "1-0:2.8.0"
    assert second.wh == Decimal("4400.0")
    assert third.obis == "1-0:2.8.0" and third.event == "E" and third.wh == Decimal(12000)
    assert event.value is None and event.wh is None and event.status == "M" and not event.billable


def test_error_flags_make_a_reading_unbillable() -> None:
    payload = make_payload(
        RD=[
            {
                "TM": "2026-03-01T08:00:00,000+0100 S",
                "TX": "B",
                "RV": 1,
                "RU": "Wh",
                "EF": "E",
                "ST": "G",
            }
        ]
    )
    (reading,) = parse_ocmf(f'OCMF|{payload}|{{"SD":"00"}}').readings
    assert reading.wh == Decimal(1) and not reading.billable


# --- signatures made here ------------------------------------------------------------------

CURVES = [
    pytest.param(ec.SECP256R1(), "ECDSA-secp256r1-SHA256", id="p256"),
    pytest.param(ec.SECP256R1(), None, id="p256-default"),
    pytest.param(ec.SECP384R1(), "ECDSA-secp384r1-SHA256", id="p384"),
    pytest.param(ec.SECP192R1(), "ECDSA-secp192r1-SHA256", id="p192"),
    pytest.param(ec.SECP256K1(), "ECDSA-secp256k1-SHA256", id="k256"),
    pytest.param(ec.BrainpoolP256R1(), "ECDSA-brainpool256r1-SHA256", id="bp256"),
    pytest.param(ec.BrainpoolP384R1(), "ECDSA-brainpool384r1-SHA256", id="bp384"),
]


@pytest.mark.parametrize(("curve", "algorithm"), CURVES)
def test_generated_signatures_verify_and_tampering_is_caught(
    curve: ec.EllipticCurve, algorithm: str | None
) -> None:
    key = ec.generate_private_key(curve)
    payload = make_payload()
    record = parse_ocmf(sign(payload, key, algorithm))
    assert verify(record, der(key)) is True
    assert verify(record, pem(key)) is True
    tampered = parse_ocmf(sign(payload, key, algorithm).replace("1234.5", "1234.6"))
    assert verify(tampered, der(key)) is False
    other = ec.generate_private_key(curve)
    assert verify(record, der(other)) is False


def test_base64_encoded_signature(p256: ec.EllipticCurvePrivateKey) -> None:
    record = parse_ocmf(sign(make_payload(), p256, None, encoding="base64"))
    assert verify(record, der(p256)) is True


def test_public_key_in_every_accepted_spelling(
    p256: ec.EllipticCurvePrivateKey,
) -> None:
    record = parse_ocmf(sign(make_payload(), p256, "ECDSA-secp256r1-SHA256"))
    raw = der(p256)
    point = p256.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    for key in (
        raw,
        raw.hex(),
        raw.hex().upper(),
        " ".join(raw.hex()[i : i + 4] for i in range(0, len(raw.hex()), 4)),
        base64.b64encode(raw).decode(),
        pem(p256),
        pem(p256).encode(),
        base64.b64encode(raw.hex().encode()).decode(),
        base64.b64encode(pem(p256).encode()).decode(),
        point,
    ):
        assert verify(record, key) is True, key


def test_raw_r_s_signature_is_accepted(p256: ec.EllipticCurvePrivateKey) -> None:
    payload = make_payload()
    r, s = utils.decode_dss_signature(p256.sign(payload.encode(), ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    record = parse_ocmf(f'OCMF|{payload}|{{"SD":"{raw.hex()}"}}')
    assert verify(record, der(p256)) is True


@pytest.mark.parametrize("signature", ["00", "3006020100020100", "30" * 40, "3045" + "02" * 70])
def test_garbled_signature_bytes_do_not_verify(
    p256: ec.EllipticCurvePrivateKey, signature: str
) -> None:
    record = parse_ocmf(f'OCMF|{make_payload()}|{{"SD":"{signature}"}}')
    assert verify(record, der(p256)) is False


def test_key_on_another_curve_than_the_algorithm_is_an_error(
    p256: ec.EllipticCurvePrivateKey,
) -> None:
    record = parse_ocmf(sign(make_payload(), p256, "ECDSA-secp256r1-SHA256"))
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(EvidenceError, match="curve secp384r1"):
        verify(record, der(p384))
    mislabelled = parse_ocmf(sign(make_payload(), p256, "ECDSA-brainpool256r1-SHA256"))
    with pytest.raises(EvidenceError, match="curve"):
        verify(mislabelled, der(p256))


@pytest.mark.parametrize(
    ("algorithm", "reason"),
    [
        ("ECDSA-secp192k1-SHA256", "not supported"),
        ("ECDSA-secp521r1-SHA256", "unknown signature algorithm"),
        ("RSA-SHA256", "unknown signature algorithm"),
        ("ECDSA-secp256r1-SHA512", "unknown signature algorithm"),
        ("", None),  # empty SA means the default
    ],
)
def test_algorithms(p256: ec.EllipticCurvePrivateKey, algorithm: str, reason: str | None) -> None:
    payload = make_payload()
    der_signature = p256.sign(payload.encode(), ec.ECDSA(hashes.SHA256())).hex()
    record = parse_ocmf(f'OCMF|{payload}|{{"SA":"{algorithm}","SD":"{der_signature}"}}')
    if reason is None:
        assert verify(record, der(p256)) is True
    else:
        with pytest.raises(EvidenceError, match=reason):
            verify(record, der(p256))


@pytest.mark.parametrize(
    "key",
    [
        b"",
        "",
        "not a key",
        "zz",
        "3059",
        b"\x30\x03\x02\x01\x00",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n",
        "MFkw",
        "A" * 20_000,
        42,
    ],
)
def test_unusable_keys_are_errors(p256: ec.EllipticCurvePrivateKey, key: object) -> None:
    record = parse_ocmf(sign(make_payload(), p256, None))
    with pytest.raises(EvidenceError, match="public key"):
        verify(record, key)  # type: ignore[arg-type]


def test_rsa_key_is_an_error(p256: ec.EllipticCurvePrivateKey) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    key = rsa_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(EvidenceError, match="not an elliptic-curve key"):
        load_public_key(key)
    with pytest.raises(EvidenceError, match="not an elliptic-curve key"):
        verify(parse_ocmf(sign(make_payload(), p256, None)), key)


# --- SignedMeterValue wrappers ---------------------------------------------------------------


def test_ocpp201_signed_meter_value_object(p256: ec.EllipticCurvePrivateKey) -> None:
    text = sign(make_payload(), p256, "ECDSA-secp256r1-SHA256")
    value = {
        "signedMeterData": base64.b64encode(text.encode()).decode(),
        "signingMethod": "ECDSA-secp256r1-SHA256",
        "encodingMethod": "OCMF",
        "publicKey": base64.b64encode(der(p256)).decode(),
    }
    data = parse_signed_meter_value(value)
    assert isinstance(data, SignedMeterData) and data.encoding_method == "OCMF"
    assert data.record.meter_model == "WM3M4C" and data.record.readings[0].wh == Decimal(
        "1234500.0"
    )
    assert data.public_key is not None and verify(data, data.public_key) is True


def test_ocpp16_signed_data_as_json_text_with_the_alternative_field_name() -> None:
    value = json.dumps(
        {
            "signedMeterValue": base64.b64encode(KEBA.encode()).decode(),
            "encodingMethod": "OCMF",
            "publicKey": base64.b64encode(bytes.fromhex(KEBA_KEY)).decode(),
        }
    )
    data = parse_signed_meter_value(value)
    assert data.record.gateway_id == "KEBA_KCP30"
    assert data.public_key is not None and verify(data, data.public_key) is True


@pytest.mark.parametrize(
    "value",
    [
        KEBA,
        "  " + KEBA + "\n",
        KEBA.encode().hex(),
        base64.b64encode(KEBA.encode()).decode(),
        KEBA.encode(),
        {"signedMeterData": KEBA, "encodingMethod": "ocmf", "publicKey": ""},
    ],
    ids=["raw", "padded", "hex", "base64", "bytes", "plain-in-object"],
)
def test_signed_data_in_every_accepted_form(value: object) -> None:
    data = parse_signed_meter_value(value)  # type: ignore[arg-type]
    assert data.record.payload == parse_ocmf(KEBA).payload and data.public_key is None
    assert verify(data, KEBA_KEY) is True


def test_signing_method_beside_the_data_stands_in_for_a_missing_sa() -> None:
    data = parse_signed_meter_value(
        {
            "signedMeterData": base64.b64encode(
                NZR_P384.replace(',"SA":"ECDSA-secp384r1-SHA256"', "").encode()
            ).decode(),
            "signingMethod": "ECDSA-secp384r1-SHA256",
            "encodingMethod": "OCMF",
            "publicKey": "",
        }
    )
    assert data.record.signature_algorithm == "ECDSA-secp384r1-SHA256"
    assert verify(data, NZR_P384_KEY) is True


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"signedMeterData": "AAAA", "encodingMethod": "EDL"}, "not OCMF"),
        ({"encodingMethod": "OCMF"}, "no signedMeterData"),
        ({"signedMeterData": 5}, "no signedMeterData"),
        ({"signedMeterData": KEBA, "publicKey": 7}, "publicKey must be a string"),
        ({"signedMeterData": KEBA, "encodingMethod": ["OCMF"]}, "encodingMethod"),
        ({"signedMeterData": "bm90IG9jbWY="}, "not OCMF"),
        ('{"signedMeterData": ', "not valid JSON"),
        ("[1, 2]", "not OCMF"),
        ("12.5", "not OCMF"),
        (b"\xff\xfe", "UTF-8"),
        (None, "must be text or an object"),
        ("x" * (3 * 1024 * 1024), "longer than"),
    ],
)
def test_bad_signed_meter_values(value: object, reason: str) -> None:
    with pytest.raises(EvidenceError, match=reason):
        parse_signed_meter_value(value)  # type: ignore[arg-type]


# --- malformed OCMF ---------------------------------------------------------------------------

GOOD_SIG = '{"SD":"3006020101020101"}'


def with_reading(**fields: object) -> str:
    reading: dict[str, object] = {
        "TM": "2026-03-01T08:00:00,000+0100 S",
        "TX": "B",
        "RV": 1,
        "RU": "kWh",
        "ST": "G",
    }
    reading.update(fields)
    reading = {k: v for k, v in reading.items() if v is not None}
    return f"OCMF|{make_payload(RD=[reading])}|{GOOD_SIG}"


MALFORMED = [
    ("", "three"),
    ("OCMF", "three"),
    ("OCMF|{}", "three"),
    ('OCMF|{"RD":[]}|{}|{"PK":"x"}', "three"),
    (f"OCMX|{make_payload()}|{GOOD_SIG}", "header"),
    (f"ocmf|{make_payload()}|{GOOD_SIG}", "header"),
    (f"OCMF|{{not json}}|{GOOD_SIG}", "payload is not valid JSON"),
    (f"OCMF|[1,2]|{GOOD_SIG}", "must be a JSON object"),
    (f"OCMF|{make_payload()}|not json", "signature section is not valid JSON"),
    (f'OCMF|{{"PG":"T1","PG":"T2","RD":[]}}|{GOOD_SIG}', "duplicate key"),
    (f'OCMF|{{"PG":"T1"}}|{GOOD_SIG}', "no readings"),
    (f'OCMF|{{"RD":[]}}|{GOOD_SIG}', "non-empty list"),
    (f'OCMF|{{"RD":[5]}}|{GOOD_SIG}', "reading 0 must be a JSON object"),
    (f'OCMF|{{"RD":{{"RV":1}}}}|{GOOD_SIG}', "non-empty list"),
    (f"OCMF|{make_payload(GI=['x'])}|{GOOD_SIG}", "field GI must be a string"),
    (f"OCMF|{make_payload(IS='yes')}|{GOOD_SIG}", "field IS must be true or false"),
    (f"OCMF|{make_payload(IF='RFID_NONE')}|{GOOD_SIG}", "field IF must be a list"),
    (with_reading(RV="abc"), "not a number"),
    (with_reading(RV="1_000"), "not a number"),
    (with_reading(RV="NaN"), "not a number"),
    (with_reading(RV=True), "must be a number"),
    (with_reading(RV=-1), "negative"),
    (with_reading(RV="-0.5"), "negative"),
    (with_reading(RV=1e30), "beyond any meter"),
    (with_reading(RV=20_000_000, RU="kWh"), "beyond any meter"),
    (with_reading(RV="1.0000000000000000000001"), "absurd precision"),
    (with_reading(RV="1e-20"), "absurd precision"),
    (with_reading(RU="GWh"), "unsupported unit"),
    (with_reading(RU="furlongs"), "unsupported unit"),
    (with_reading(RU=None), "no unit"),
    (with_reading(TM="yesterday"), "TM"),
    (with_reading(TM="2026-02-30T08:00:00,000+0100 S"), "not a valid date"),
    (with_reading(TM="2026-03-01T08:00:00,000+9900 S"), "not a valid date"),
    (with_reading(TM="2026-03-01T08:00:00,000+0100 Q"), "time status"),
    (with_reading(TX="Z"), "transaction event"),
    (with_reading(ST="?"), "meter state"),
    (f"OCMF|{make_payload()}|{{}}", "no signature data"),
    (f'OCMF|{make_payload()}|{{"SD":""}}', "no signature data"),
    (f'OCMF|{make_payload()}|{{"SD":"3045zz"}}', "not hexadecimal"),
    (f'OCMF|{make_payload()}|{{"SD":"304"}}', "not hexadecimal"),
    (f'OCMF|{make_payload()}|{{"SD":"!!!!","SE":"base64"}}', "not base64"),
    (f'OCMF|{make_payload()}|{{"SD":"MEUé","SE":"base64"}}', "not base64"),
    (f'OCMF|{make_payload()}|{{"SD":"00","SE":"rot13"}}', "signature encoding"),
    (
        f'OCMF|{make_payload()}|{{"SD":"00","SM":"application/json"}}',
        "signature format",
    ),
    (f'OCMF|{make_payload()}|{{"SD":12}}', None),  # numbers as SD are read as text "12"
]


@pytest.mark.parametrize(("text", "reason"), MALFORMED)
def test_malformed_ocmf_gives_a_clear_reason(text: str, reason: str | None) -> None:
    if reason is None:
        assert parse_ocmf(text).signature == b"\x12"
        return
    with pytest.raises(EvidenceError) as caught:
        parse_ocmf(text)
    assert reason in caught.value.reason and str(caught.value) == caught.value.reason


def test_json_constants_are_rejected() -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        text = with_reading().replace('"RV":1', f'"RV":{constant}')
        with pytest.raises(EvidenceError, match=f"{constant.lstrip('-')}|not a meter value"):
            parse_ocmf(text)


HUGE_EXPONENT = "1e9999999999999999999"  # beyond Decimal's exponent range (about 10**18)


@pytest.mark.parametrize(
    "text",
    [
        with_reading().replace('"RV":1', f'"RV":{HUGE_EXPONENT}'),
        with_reading().replace('"RV":1', f'"RV":-{HUGE_EXPONENT}'),
        with_reading(RV=HUGE_EXPONENT),
        with_reading(RV="1.5e-9999999999999999999"),
        with_reading().replace('"FV":"1.0"', f'"FV":{HUGE_EXPONENT}'),
        f'OCMF|{make_payload()}|{{"SD":"00","X":0e-9999999999999999999}}',
    ],
    ids=[
        "payload-number",
        "negative",
        "string-value",
        "tiny-string-value",
        "other-field",
        "signature-section",
    ],
)
def test_numbers_beyond_the_decimal_range_are_errors(text: str) -> None:
    with pytest.raises(EvidenceError, match="out of range"):
        parse_ocmf(text)
    with pytest.raises(EvidenceError, match="out of range"):
        parse_signed_meter_value(json.dumps({"signedMeterData": text}))


def test_numbers_beyond_the_decimal_range_in_a_signed_meter_value_object_are_errors() -> None:
    with pytest.raises(EvidenceError, match="out of range"):
        parse_signed_meter_value(f'{{"signedMeterData": "", "n": {HUGE_EXPONENT}}}')


@pytest.mark.parametrize(
    "text",
    [
        "OCMF|" + "x" * (2 * 1024 * 1024) + "|{}",
        ("OCMF|" + "x" * (2 * 1024 * 1024) + "|{}").encode(),
        "OCMF|" + "[" * 50_000 + "|{}",
        'OCMF|{"RD":' + "[" * 30_000 + "]" * 30_000 + "}|{}",
        b"OCMF|\xff\xfe|{}",
        'OCMF|{"GI":"\ud800"}|{}',
    ],
    ids=[
        "2MB-text",
        "2MB-bytes",
        "deep-brackets",
        "deep-nesting",
        "not-utf8",
        "lone-surrogate",
    ],
)
def test_huge_deep_and_undecodable_inputs_are_errors(text: str | bytes) -> None:
    with pytest.raises(EvidenceError):
        parse_ocmf(text)


# --- never anything but EvidenceError -------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["kWh", "Wh", "GWh", "B", "E", "G", "2026-03-01T08:00:00,000+0100 S"]),
)
json_values = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "RD",
                    "TM",
                    "TX",
                    "RV",
                    "RU",
                    "RI",
                    "ST",
                    "EF",
                    "MS",
                    "IS",
                    "IF",
                    "SD",
                    "SA",
                    "SE",
                    "SM",
                    "signedMeterData",
                    "encodingMethod",
                    "publicKey",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


def only_evidence_errors(function: object, *args: object) -> None:
    try:
        function(*args)  # type: ignore[operator]
    except EvidenceError as exc:
        assert exc.reason


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    only_evidence_errors(parse_ocmf, text)
    only_evidence_errors(parse_ocmf, "OCMF|" + text)
    only_evidence_errors(parse_signed_meter_value, text)
    only_evidence_errors(load_public_key, text)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    only_evidence_errors(parse_ocmf, data)
    only_evidence_errors(parse_ocmf, b"OCMF|" + data)
    only_evidence_errors(parse_signed_meter_value, data)
    only_evidence_errors(load_public_key, data)
    only_evidence_errors(load_public_key, b"\x04" + data, ec.SECP256R1)


@FUZZ
@given(json_values, json_values)
def test_structured_junk_never_raises_anything_else(payload: object, signature: object) -> None:
    text = f"OCMF|{json.dumps(payload)}|{json.dumps(signature)}"
    only_evidence_errors(parse_ocmf, text)
    only_evidence_errors(parse_signed_meter_value, json.dumps(payload))
    if isinstance(payload, dict):
        only_evidence_errors(parse_signed_meter_value, payload)


@FUZZ
@given(st.binary(max_size=120))
def test_random_signatures_do_not_verify_with_the_right_key(signature: bytes) -> None:
    record = parse_ocmf(KEBA)
    assume(signature != record.signature)
    forged = OcmfRecord(
        **{**{f: getattr(record, f) for f in record.__slots__}, "signature": signature}
    )
    assert verify(forged, KEBA_KEY) is False


@FUZZ
@given(
    st.binary(max_size=120),
    st.sampled_from(
        [
            (NZR_P384_KEY, "public key is on curve secp384r1"),
            (EBZ_KEY, "public key is on curve secp192r1"),
            ("zz", "public key is not valid base64"),
        ]
    ),
)
def test_keys_that_cannot_check_the_record_are_errors_whatever_the_signature(
    signature: bytes, key_and_reason: tuple[str, str]
) -> None:
    key, reason = key_and_reason
    record = parse_ocmf(KEBA)
    forged = OcmfRecord(
        **{**{f: getattr(record, f) for f in record.__slots__}, "signature": signature}
    )
    with pytest.raises(EvidenceError, match=reason):
        verify(forged, key)


# --- the MID list and classification --------------------------------------------------------


def test_shipped_list_loads_and_names_its_sources() -> None:
    meters = load_mid_meters()
    assert len(meters.entries) >= 10
    assert all(entry.source and entry.confidence in {"high", "medium"} for entry in meters.entries)


@pytest.mark.parametrize(
    ("meter_type", "vendor"),
    [
        ("Eastron SDM630-Modbus MID V2", "Eastron"),
        ("SDM72D-M-2 MID", "Eastron"),
        ("SDM630", None),  # sold without MID too: no proof
        ("iskra wm3m4c", "Iskra"),
        ("WM3M4", "Iskra"),
        ("EEM-350-D-MCB", "Phoenix Contact"),
        ("EM340-DIN.AV2.3.X.S1.PF", "Carlo Gavazzi"),
        ("EM340-DIN.AV2.3.X.S1.X", None),
        ("ABB B23 112-100", "ABB"),
        ("B24", "ABB"),
        ("XB23", None),
        ("DME D120 T1 MID", "Lovato Electric"),
        ("DVH4013", "DZG"),
        ("PRO380-Mod", "Inepro Metering"),
        ("EcoCount S85", "NZR"),
        ("", None),
        (None, None),
        ("unknown meter", None),
    ],
)
def test_meter_type_matching(meter_type: str | None, vendor: str | None) -> None:
    entry = load_mid_meters().match(meter_type)
    assert (entry.vendor if entry else None) == vendor


def test_an_overlong_meter_type_is_not_matched_word_by_word() -> None:
    """meterType reaches `classify` unbounded (the proxy never rejects traffic, a frame may hold
    1 MB). Matching every pattern at every word of it was quadratic (a 256 kB meterType took
    seconds); the work must stay bounded by the limit however long the text is."""
    meters = load_mid_meters()
    patterns = sum(len(entry.models) for entry in meters.entries)
    calls = 0
    real = fnmatch.fnmatchcase

    def counting(name: str, pattern: str) -> bool:
        nonlocal calls
        calls += 1
        assert calls <= patterns * MAX_METER_TYPE_CHARS, "matching work grows with the meter type"
        return real(name, pattern)

    meter_type = "x " * 100_000 + "Eastron SDM630 MID"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fnmatch, "fnmatchcase", counting)
        assert meters.match(meter_type) is None
        assert classify(meter_type, "SN123", mid_meters=meters) is MeterClass.UNKNOWN
        longest = meter_type[-MAX_METER_TYPE_CHARS:]
        assert meters.match(longest) is not None
        assert classify(longest, "SN123", mid_meters=meters) is MeterClass.DECLARED


def test_an_edited_list_is_used(tmp_path: Path) -> None:
    path = tmp_path / "mid.toml"
    path.write_text(
        '[[meter]]\nvendor = "Acme"\nmodels = ["ZX-9?0"]\nconfidence = "high"\n'
        'source = "own certificate check"\n'
    )
    meters = load_mid_meters(path)
    assert meters.match("acme zx 910") is not None and meters.match("ZX-9100") is not None
    assert meters.match("ZX-99") is None
    assert classify("ZX-910", "S1", mid_meters=meters) is MeterClass.DECLARED
    assert classify("SDM630 MID", "S1", mid_meters=meters) is MeterClass.UNKNOWN


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[[meter]\n", "not valid TOML"),
        ("meter = 1\n", "expected [[meter]]"),
        ('[[meter]]\nmodels = ["ABC"]\n', "needs a vendor"),
        ('[[meter]]\nvendor = "X"\nmodels = []\n', "non-empty list of models"),
        ('[[meter]]\nvendor = "X"\nmodels = ["B2"]\n', "too short"),
        ('[[meter]]\nvendor = "X"\nmodels = ["ABC"]\nnote = 3\n', "must be strings"),
    ],
)
def test_a_broken_list_is_a_clear_error(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "mid.toml"
    path.write_text(content)
    with pytest.raises(EvidenceError, match=re.escape(reason)):
        load_mid_meters(path)
    with pytest.raises(EvidenceError, match="cannot read"):
        load_mid_meters(tmp_path / "missing.toml")


def test_classification_table() -> None:
    keba, tampered = parse_ocmf(KEBA), parse_ocmf(KEBA_TAMPERED)
    wrapped = parse_signed_meter_value(KEBA)
    p384 = ec.generate_private_key(ec.SECP384R1())
    Case = tuple[
        tuple[
            str | None,
            str | None,
            list[OcmfRecord | SignedMeterData],
            bytes | str | None,
        ],
        MeterClass,
    ]
    cases: list[Case] = [
        # (meter_type, meter_serial, signed, known_key) -> class
        (("DVH4013", "1DZG0033016824", [keba], KEBA_KEY), MeterClass.SIGNED_VERIFIED),
        ((None, None, [keba, wrapped], KEBA_KEY), MeterClass.SIGNED_VERIFIED),
        ((None, None, [keba], bytes.fromhex(KEBA_KEY)), MeterClass.SIGNED_VERIFIED),
        ((None, None, [keba], None), MeterClass.SIGNED_UNVERIFIED),
        (("DVH4013", "1", [keba, tampered], KEBA_KEY), MeterClass.SIGNED_UNVERIFIED),
        (
            (None, None, [keba], NZR_P384_KEY),
            MeterClass.SIGNED_UNVERIFIED,
        ),  # wrong curve
        ((None, None, [keba], der(p384)), MeterClass.SIGNED_UNVERIFIED),
        ((None, None, [keba], "garbage"), MeterClass.SIGNED_UNVERIFIED),
        (("Eastron SDM630 MID", "SN123", [], None), MeterClass.DECLARED),
        (("EM340-DIN.AV2.3.X.S1.PF", "  7 ", [], KEBA_KEY), MeterClass.DECLARED),
        (("Eastron SDM630 MID", None, [], None), MeterClass.UNKNOWN),
        (("Eastron SDM630 MID", "  ", [], None), MeterClass.UNKNOWN),
        (("SDM630", "SN123", [], None), MeterClass.UNKNOWN),
        (("Generic kWh meter", "SN123", [], None), MeterClass.UNKNOWN),
        ((None, None, [], None), MeterClass.UNKNOWN),
    ]
    for (meter_type, serial, signed, key), expected in cases:
        assert classify(meter_type, serial, signed, key) is expected, (
            meter_type,
            serial,
            key,
        )
    assert (
        MeterClass.SIGNED_VERIFIED == "signed-verified" and MeterClass.DECLARED.value == "declared"
    )
