"""EAN-18: length, digits and the GS1 mod-10 check digit, each with its own message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ere.core.ean import Ean, EanError, check_digit

# Digits 8 7 1 6 8 7 1 2 0 … 0 weighted 3,1,3,1,… from the left:
# 8×3 + 7×1 + 1×3 + 6×1 + 8×3 + 7×1 + 1×3 + 2×1 = 24+7+3+6+24+7+3+2 = 76, so the check digit is
# (10 − 76 mod 10) mod 10 = 4.
VALID = "871687120000000004"


def test_check_digit_by_hand() -> None:
    assert check_digit(VALID[:17]) == 4
    assert str(Ean(VALID)) == VALID


def test_agrees_with_a_published_ean13() -> None:
    # 4006381333931 is a retail EAN-13 with a valid check digit; GS1 numbers of any length share
    # the algorithm, and leading zeros weigh nothing, so padded to 18 digits it is valid too.
    assert str(Ean("00000" + "4006381333931")) == "000004006381333931"
    with pytest.raises(EanError, match="expected 1"):
        Ean("00000" + "4006381333932")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("87168712000000000", "has 17 digits; it must have 18"),
        ("8716871200000000040", "has 19 digits; it must have 18"),
        ("", "has 0 digits"),
        ("87168712000000000A", "has 'A' at position 18; only digits are allowed"),
        ("871-687120000000004", "has '-' at position 4"),
        ("871687120000000005", "the last digit is 5, expected 4"),
    ],
)
def test_invalid_eans_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(EanError, match=message):
        Ean(text)


def test_parse_ignores_spaces_only() -> None:
    assert Ean.parse(" 871 687 120 000 000 004 ") == Ean(VALID)
    with pytest.raises(EanError, match="position 4"):
        Ean.parse("871.687.120.000.000.004")
    with pytest.raises(EanError, match="as text"):
        Ean.parse(871687120000000004)  # type: ignore[arg-type]


def test_ean_error_is_a_value_error() -> None:
    assert issubclass(EanError, ValueError)


data_digits = st.text(alphabet="0123456789", min_size=17, max_size=17)


@given(data_digits)
def test_property_computed_check_digit_validates(first_17: str) -> None:
    code = first_17 + str(check_digit(first_17))
    assert Ean(code).code == code


@given(data_digits, st.integers(0, 17), st.integers(1, 9))
def test_property_every_single_mistyped_digit_is_caught(
    first_17: str, position: int, shift: int
) -> None:
    code = first_17 + str(check_digit(first_17))
    mistyped = code[:position] + str((int(code[position]) + shift) % 10) + code[position + 1 :]
    with pytest.raises(EanError, match="fails its check digit"):
        Ean(mistyped)
