"""Property-based fuzzing of the meter evidence parsers with charger-supplied garbage.

Every entry point that takes what a charger sent (`parse_ocmf`, `parse_signed_meter_value`,
`load_public_key`, `verify`, `classify`, `MidMeterList.match`) must either give its documented
result or raise `EvidenceError` with a reason: never another exception. Inputs come from real
records mutated at random places, OCMF built field by field from hostile JSON tokens (numbers
beyond any range, deep nesting, NUL, wrong types), huge hex/base64 keys and signatures and
unknown curves. Work per input is bounded by length limits checked before any parsing, which
the tests assert structurally (by what the parser is allowed to call), never by timing.

test_evidence.py holds the example-based tests and a first layer of junk fuzzing (random text
and bytes, json.dumps of random structures); this file does not repeat those.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
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
    ocmf,
    parse_ocmf,
    parse_signed_meter_value,
    verify,
)
from proxy.capture.evidence.ocmf import (
    MAX_ENVELOPE_CHARS,
    MAX_KEY_CHARS,
    MAX_OCMF_CHARS,
    MAX_WH,
)
from testkit.ocmf_records import (
    DZG_EBEE,
    DZG_EBEE_KEY,
    EBZ_KEY,
    EBZ_T117,
    EBZ_T120,
    KEBA,
    KEBA_KEY,
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

# A few hundred examples per property keep this file at a few seconds; raise max_examples
# locally for a longer campaign.
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RECORDS = [
    KEBA,
    NZR_BRAINPOOL,
    NZR_P384,
    EBZ_T117,
    EBZ_T120,
    DZG_EBEE,
    NANO_K1,
    TWIN,
    spec_example(),
]
SIGNED = [
    (KEBA, KEBA_KEY),
    (NZR_BRAINPOOL, NZR_BRAINPOOL_KEY),
    (NZR_P384, NZR_P384_KEY),
    (EBZ_T117, EBZ_KEY),
    (EBZ_T120, EBZ_KEY),
    (DZG_EBEE, DZG_EBEE_KEY),
    (NANO_K1, NANO_K1_KEY),
    (TWIN, TWIN_KEY),
]
KEYS = [
    KEBA_KEY,
    NZR_BRAINPOOL_KEY,
    NZR_P384_KEY,
    EBZ_KEY,
    DZG_EBEE_KEY,
    NANO_K1_KEY,
    TWIN_KEY,
]
HEX_KEYS = [key for key in KEYS if key != NANO_K1_KEY]  # NANO_K1_KEY is base64


def outcome(function: Callable[..., Any], *args: Any) -> Any:
    """The result of `function(*args)`, or the EvidenceError it raised; anything else fails."""
    try:
        return function(*args)
    except EvidenceError as exc:
        assert exc.reason and str(exc) == exc.reason
        return exc


# --------------------------------------------------------------------------- hostile input

# JSON tokens that are valid JSON (or nearly) but hostile: numbers beyond Decimal's exponent
# range or with absurd precision, NUL and lone surrogates, deep nesting, wrong types.
HUGE_NUMBERS = [
    "1e999999999999999999",
    "1e9999999999999999999",
    "1E+99999999999999999999999",
    "-1e99999999999999999999",
    "1.5e-99999999999999999999",
    "0e99999999999999999999",
    "9" * 5000,
    "0." + "0" * 5000 + "1",
    "1" + "0" * 30,
    "-0",
    "-0.0",
    "1e-10",
]
NASTY_TOKENS = [
    *HUGE_NUMBERS,
    *(json.dumps(n) for n in HUGE_NUMBERS),  # the same as strings ("RV" may be a string)
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "true",
    "false",
    "[]",
    "{}",
    '""',
    '"\\u0000"',
    '"\\ud800"',
    '"a\\u0000b"',
    '"\x00"',
    '"|"',
    '"\\"',
    "[" * 3000 + "]" * 3000,
    "[" * 50 + "1" + "]" * 50,
    '{"a":' * 40 + "1" + "}" * 40,
    '"' + "x" * 2000 + '"',
    '["B","E"]',
    '"2026-03-01T08:00:00,000+0100 S"',
    '"9999-99-99T99:99:99,999999+9999 Z"',
    '"2026-03-01T08:00:00,000+2400 S"',
    '"kWh"',
    '"Wh"',
    '"G"',
    '"B"',
]
json_tokens = st.one_of(
    st.sampled_from(NASTY_TOKENS),
    st.integers().map(str),
    st.text(max_size=20).map(json.dumps),
    st.from_regex(r"-?[0-9]{1,3}(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,25})?", fullmatch=True),
)
PAYLOAD_KEYS = [
    "FV",
    "GI",
    "GS",
    "GV",
    "PG",
    "MV",
    "MM",
    "MS",
    "MF",
    "IS",
    "IL",
    "IF",
    "IT",
    "ID",
    "CT",
    "CI",
    "RD",
]
READING_KEYS = ["TM", "TX", "RV", "RI", "RU", "RT", "EF", "ST", "CL"]
SIGNATURE_KEYS = ["SD", "SA", "SE", "SM"]


def json_object(draw: Any, keys: list[str], values: st.SearchStrategy[str]) -> str:
    """A JSON object written by hand so that any token (even invalid JSON) can be a value."""
    chosen = draw(st.lists(st.sampled_from(keys), max_size=len(keys) + 2))  # duplicates too
    items = [f'"{key}":{draw(values)}' for key in chosen]
    return "{" + ",".join(items) + "}"


@st.composite
def readings(draw: Any) -> str:
    good = {
        "TM": '"2026-03-01T08:00:00,000+0100 S"',
        "TX": '"B"',
        "RV": "1.5",
        "RU": '"kWh"',
        "ST": '"G"',
        "RI": '"1-b:1.8.0"',
        "EF": '""',
    }
    value = st.one_of(json_tokens, st.sampled_from(list(good.values())))
    entries = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            fields = dict(good)
            for key in draw(st.lists(st.sampled_from(READING_KEYS), max_size=2)):
                fields[key] = draw(value)
            entries.append("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}")
        else:
            entries.append(
                draw(st.one_of(st.just(json_object(draw, READING_KEYS, value)), json_tokens))
            )
    return "[" + ",".join(entries) + "]"


@st.composite
def built_ocmf(draw: Any) -> str:
    """OCMF assembled field by field from hostile tokens (mostly well-formed JSON)."""
    payload_value = st.one_of(json_tokens, readings())
    payload = json_object(draw, PAYLOAD_KEYS, payload_value)
    if draw(st.booleans()):
        payload = payload[:-1] + ("," if payload != "{}" else "") + f'"RD":{draw(readings())}' + "}"
    signature = json_object(draw, SIGNATURE_KEYS, st.one_of(json_tokens, signature_values()))
    return f"OCMF|{payload}|{signature}"


@st.composite
def signature_values(draw: Any) -> str:
    """Values for the signature section: long hex/base64 data, odd encodings, unknown curves."""
    kind = draw(st.sampled_from(["hex", "base64", "algorithm", "encoding", "mime"]))
    if kind == "hex":
        size = draw(st.sampled_from([0, 1, 70, 2047, 2048, 2049, 5000]))
        return json.dumps(
            draw(st.binary(min_size=min(size, 8), max_size=8)).hex() * (size // 8 + 1)
        )
    if kind == "base64":
        raw = draw(st.binary(max_size=64)) * draw(st.sampled_from([1, 10, 60]))
        return json.dumps(
            base64.b64encode(raw).decode() + draw(st.sampled_from(["", "=", "==", "!"]))
        )
    if kind == "algorithm":
        curve = draw(
            st.sampled_from(
                [
                    "secp256r1",
                    "secp384r1",
                    "secp521r1",
                    "secp192k1",
                    "secp224r1",
                    "brainpoolP512r1",
                    "brainpoolP256r1",
                    "ed25519",
                    "",
                    "SECP256R1",
                    "secp256r1\x00",
                ]
            )
            | st.text(max_size=12)
        )
        return json.dumps(
            draw(st.sampled_from(["ECDSA-{}-SHA256", "ECDSA-{}-SHA512", "{}"])).format(curve)
        )
    if kind == "encoding":
        return json.dumps(draw(st.sampled_from(["hex", "HEX", "base64", "Base64", "rot13", ""])))
    return json.dumps(draw(st.sampled_from(["application/x-der", "application/json", ""])))


MUTATION_TOKENS = [
    "|",
    "{",
    "}",
    "[",
    "]",
    '"',
    ",",
    ":",
    "\\",
    "\\u",
    "\\ud800",
    "\x00",
    "\ud800",
    "e99999999999999999999",
    "E+",
    "-",
    ".",
    " ",
    "\n",
    "null",
    "OCMF|",
    "1e999999999999999999999",
]


@st.composite
def mutated_records(draw: Any) -> str:
    """A real record with a few characters inserted, deleted or replaced anywhere."""
    text = draw(st.sampled_from(RECORDS))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 4]))):
        position = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]))
        token = draw(st.sampled_from(MUTATION_TOKENS) | st.text(min_size=1, max_size=3))
        if kind == "insert":
            text = text[:position] + token + text[position:]
        elif kind == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 5)) :]
        elif kind == "replace":
            text = text[:position] + token + text[position + len(token) :]
        elif kind == "truncate":
            text = text[:position]
        else:  # a stretch repeated: duplicate keys, readings, sections
            end = min(len(text), position + draw(st.integers(1, 80)))
            text = text[:end] + text[position:end] + text[end:]
    return text


class Raw(str):
    """A JSON token written verbatim by `dump` (it may be invalid JSON on purpose)."""


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


@st.composite
def field_swaps(draw: Any) -> str:
    """A real record with one or two fields (of the payload, a reading or the signature
    section) set to a hostile token: mostly well-formed JSON with wrong content."""
    _, payload_text, signature_text = draw(st.sampled_from(RECORDS)).split("|")
    payload, signature = json.loads(payload_text), json.loads(signature_text)
    readings = list(payload["RD"])  # kept even if RD itself is swapped
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.sampled_from(["payload", "reading", "reading", "signature"]))
        if where == "payload":
            target, names = payload, PAYLOAD_KEYS
        elif where == "reading":
            target, names = draw(st.sampled_from(readings)), READING_KEYS
        else:
            target, names = signature, SIGNATURE_KEYS
        target[draw(st.sampled_from(names))] = Raw(draw(st.one_of(json_tokens, signature_values())))
    return f"OCMF|{dump(payload)}|{dump(signature)}"


ocmf_texts = st.one_of(mutated_records(), built_ocmf(), field_swaps(), field_swaps())


# ------------------------------------------------------------------------- the properties


def check_record(record: OcmfRecord, text: str) -> None:
    """The documented invariants of a record the parser accepted."""
    assert isinstance(record, OcmfRecord)
    assert len(text) <= MAX_OCMF_CHARS
    assert record.payload == text.strip().split("|")[1]
    assert record.readings and record.signature
    for reading in record.readings:
        if reading.value is not None:
            assert isinstance(reading.value, Decimal) and reading.value.is_finite()
            assert reading.value >= 0 and len(reading.value.as_tuple().digits) <= ocmf.MAX_DIGITS
            assert reading.unit is not None
        if reading.wh is not None:
            assert reading.value is not None and 0 <= reading.wh <= MAX_WH
            factor = 1000 if reading.unit in ("kWh", "KWh", "kwh", "KWH") else 1
            assert reading.unit in ("kWh", "KWh", "kwh", "KWH", "Wh", "wh", "WH")
            assert reading.wh == reading.value * factor
        assert reading.time is None or reading.time.tzinfo is not None
        assert reading.event is None or len(reading.event) == 1


@FUZZ
@given(ocmf_texts)
def test_mutated_and_hostile_ocmf_is_parsed_or_refused(text: str) -> None:
    result = outcome(parse_ocmf, text)
    if not isinstance(result, EvidenceError):
        check_record(result, text)
    # The same text as UTF-8 bytes gives the same outcome (lone surrogates cannot be UTF-8).
    from_bytes = outcome(parse_ocmf, text.encode("utf-8", "surrogatepass"))
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        if isinstance(result, EvidenceError):
            assert isinstance(from_bytes, EvidenceError) and from_bytes.reason == result.reason
        else:
            assert from_bytes == result


@FUZZ
@given(
    ocmf_texts,
    st.sampled_from(["raw", "hex", "base64", "object", "json-text", "renamed"]),
)
def test_signed_meter_values_of_hostile_ocmf_are_parsed_or_refused(text: str, form: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    value: Any
    if form == "raw":
        value = text
    elif form == "hex":
        value = data.hex()
    elif form == "base64":
        value = base64.b64encode(data).decode()
    else:
        wrapped = {
            "signedMeterData": base64.b64encode(data).decode(),
            "encodingMethod": "OCMF",
            "signingMethod": "ECDSA-secp256r1-SHA256",
            "publicKey": KEBA_KEY,
        }
        if form == "renamed":
            wrapped["signedMeterValue"] = wrapped.pop("signedMeterData")
        value = wrapped if form == "object" else json.dumps(wrapped)
    result = outcome(parse_signed_meter_value, value)
    if not isinstance(result, EvidenceError):
        assert isinstance(result, SignedMeterData) and result.encoding_method == "OCMF"
        assert isinstance(outcome(verify, result, KEBA_KEY), (bool, EvidenceError))
        assert isinstance(classify(None, None, [result], KEBA_KEY), MeterClass)


@st.composite
def signed_meter_objects(draw: Any) -> dict[str, Any]:
    """SignedMeterValue objects with fields of any JSON type and hostile sizes."""
    junk = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    data = st.one_of(
        junk,
        st.sampled_from(RECORDS).map(lambda t: base64.b64encode(t.encode()).decode()),
        st.sampled_from(RECORDS).map(lambda t: t.encode().hex()),
        st.just("A" * (MAX_ENVELOPE_CHARS + 1)),
        st.just("  \n\t "),
    )
    obj: dict[str, Any] = {}
    for name, values in [
        ("signedMeterData", data),
        ("signedMeterValue", data),
        (
            "encodingMethod",
            st.one_of(junk, st.sampled_from(["OCMF", " ocmf ", "EDL", "SML", ""])),
        ),
        ("signingMethod", st.one_of(junk, signature_values().map(json.loads))),
        (
            "publicKey",
            st.one_of(junk, st.sampled_from(KEYS), huge_keys(), keys().map(lambda k: k[0])),
        ),
    ]:
        if draw(st.booleans()):
            obj[name] = draw(values)
    return obj


@FUZZ
@given(signed_meter_objects())
def test_signed_meter_value_objects_with_any_field_types(obj: dict[str, Any]) -> None:
    for value in (
        obj,
        json.dumps(obj, default=repr),
    ):  # bytes values travel as text in JSON
        result = outcome(parse_signed_meter_value, value)
        if not isinstance(result, EvidenceError):
            assert isinstance(result, SignedMeterData)
            assert result.public_key is None or isinstance(result.public_key, str)
            if result.public_key is not None:
                assert isinstance(outcome(verify, result, result.public_key), (bool, EvidenceError))


@st.composite
def huge_keys(draw: Any) -> str:
    """Key text far beyond any real key, in each spelling the loader tries."""
    raw = draw(st.binary(min_size=1, max_size=64)) * draw(st.sampled_from([1, 70, 200]))
    spelling = draw(st.sampled_from(["hex", "base64", "pem", "base64-of-hex", "spaced-hex"]))
    if spelling == "hex":
        return raw.hex()
    if spelling == "base64":
        return base64.b64encode(raw).decode()
    if spelling == "pem":
        body = base64.encodebytes(raw).decode()
        return f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"
    if spelling == "base64-of-hex":
        return base64.b64encode(raw.hex().encode()).decode()
    return " ".join(raw.hex()[i : i + 4] for i in range(0, len(raw.hex()), 4))


@st.composite
def keys(draw: Any) -> tuple[str | bytes, bool]:
    """A real key in one of the spellings the loader understands, its DER sometimes with bytes
    flipped, cut or appended; and whether it is intact."""
    der = bytearray(bytes.fromhex(draw(st.sampled_from(HEX_KEYS)).replace(" ", "")))
    intact = bytes(der)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        kind = draw(st.sampled_from(["flip", "cut", "append"]))
        position = draw(st.integers(0, len(der) - 1)) if der else 0
        if kind == "flip" and der:
            der[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del der[position:]
        else:
            der += draw(st.binary(min_size=1, max_size=8))
    raw = bytes(der)
    spelling = draw(
        st.sampled_from(
            [
                "der",
                "hex",
                "HEX",
                "spaced",
                "base64",
                "pem",
                "base64-of-hex",
                "base64-of-pem",
                "point",
            ]
        )
    )
    pem = (
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.encodebytes(raw).decode()
        + "-----END PUBLIC KEY-----\n"
    )
    spellings: dict[str, str | bytes] = {
        "der": raw,
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "spaced": " ".join(raw.hex()[i : i + 4] for i in range(0, len(raw.hex()), 4)),
        "base64": base64.b64encode(raw).decode(),
        "pem": pem,
        "base64-of-hex": base64.b64encode(raw.hex().encode()).decode(),
        "base64-of-pem": base64.b64encode(pem.encode()).decode(),
        "point": b"\x04" + raw[-64:],
    }
    return spellings[spelling], raw == intact and spelling != "point"


@FUZZ
@given(
    st.one_of(huge_keys().map(lambda k: (k, False)), keys()),
    st.sampled_from([None, ec.SECP256R1, ec.SECP384R1, ec.SECP192R1]),
)
def test_hostile_public_keys_load_or_are_refused(
    key_and_intact: tuple[str | bytes, bool], curve: Any
) -> None:
    key, intact = key_and_intact
    result = outcome(load_public_key, key, curve)
    if intact:
        assert isinstance(result, ec.EllipticCurvePublicKey)
    if not isinstance(result, EvidenceError):
        assert isinstance(result, ec.EllipticCurvePublicKey)
        assert len(key) <= MAX_KEY_CHARS


@FUZZ
@given(
    st.sampled_from(SIGNED),
    st.one_of(huge_keys(), keys().map(lambda k: k[0])),
    st.binary(max_size=300),
)
def test_verify_with_hostile_keys_and_signatures_gives_a_verdict_or_an_error(
    record_and_key: tuple[str, str], key: str | bytes, signature: bytes
) -> None:
    record = parse_ocmf(record_and_key[0])
    forged = OcmfRecord(
        **{**{f: getattr(record, f) for f in record.__slots__}, "signature": signature}
    )
    for candidate, checked in (
        (forged, key),
        (forged, record_and_key[1]),
        (record, key),
    ):
        result = outcome(verify, candidate, checked)
        assert result in (True, False) or isinstance(result, EvidenceError)
    # A random signature never verifies with the record's own key.
    assume(signature != record.signature)
    assert outcome(verify, forged, record_and_key[1]) is False


meter_types = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.sampled_from(["SDM630 MID", "Eastron SDM630-Modbus MID V2", "DVH4013", "B23", "WM3M4C"]),
    st.builds(
        lambda t, n: t * n,
        st.sampled_from(["a ", "SDM630 ", "x-", "\x00", "SDM630*MID "]),
        st.integers(1, 200),
    ),
)


@FUZZ
@given(
    meter_types,
    st.one_of(st.none(), st.text(max_size=30)),
    st.lists(st.sampled_from(RECORDS[:8]).map(parse_ocmf), max_size=2),
    st.one_of(st.none(), st.sampled_from(KEYS), st.text(max_size=40), st.binary(max_size=40)),
)
def test_classify_always_gives_a_class(
    meter_type: str | None,
    serial: str | None,
    signed: list[OcmfRecord],
    key: str | bytes | None,
) -> None:
    result = classify(meter_type, serial, signed, key)
    assert isinstance(result, MeterClass)
    if result is MeterClass.DECLARED:
        assert not signed and meter_type and serial and serial.strip()
        assert load_mid_meters().match(meter_type) is not None


# ----------------------------------------------------------- work bounded by input length


@FEW
@given(
    st.sampled_from(RECORDS),
    st.integers(1, 3 * MAX_OCMF_CHARS),
    st.sampled_from([" ", "\n", "x"]),
)
def test_oversized_input_is_refused_before_any_parsing(text: str, extra: int, pad: str) -> None:
    """Whatever its content, input over the limits never reaches the JSON parser or a decoder."""
    padded = text + pad * max(extra, MAX_ENVELOPE_CHARS + 1 - len(text))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("oversized input was parsed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ocmf, "_json_object", forbidden)
        patch.setattr(ocmf, "_ocmf_text", forbidden)
        patch.setattr(ocmf.base64, "b64decode", forbidden)
        for function, value in [
            (parse_ocmf, padded),
            (parse_ocmf, padded.encode()),
            (parse_signed_meter_value, padded),
            (parse_signed_meter_value, padded.encode()),
            (parse_signed_meter_value, {"signedMeterData": padded}),
            (load_public_key, "A" * (MAX_KEY_CHARS + extra)),
        ]:
            assert isinstance(outcome(function, value), EvidenceError)
