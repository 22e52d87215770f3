"""The EAN of a grid connection: the 18-digit code ERE are booked on.

Dutch connection EANs are GS1 Global Service Relation Numbers: 17 digits and a mod-10 check
digit. The check digit makes the sum of all 18 digits, weighted 3, 1, 3, 1, … from the left
(the check digit itself weighs 1), a multiple of 10; it catches every single mistyped digit.

`Ean(code)` accepts only the exact 18 digits and raises `EanError` naming what is wrong: the
length, the first character that is not a digit, or the check digit expected.
`Ean.parse(text)` is the same for human input: it ignores spaces (codes are often written in
groups, "871 687 120 000 000 004").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EAN_LENGTH", "Ean", "EanError", "check_digit"]

EAN_LENGTH = 18
_DIGITS = frozenset("0123456789")


class EanError(ValueError):
    """A string that is not a valid 18-digit EAN; the message says what is wrong."""


def check_digit(first_17: str) -> int:
    """The GS1 mod-10 check digit for 17 data digits (EanError if they are not 17 digits)."""
    if len(first_17) != EAN_LENGTH - 1 or not _DIGITS.issuperset(first_17):
        raise EanError(f"a check digit needs 17 digits, got {first_17!r}")
    # Weights run 3, 1, 3, … from the digit next to the check digit, leftwards.
    weighted = sum(
        int(digit) * (3 if at % 2 == 0 else 1) for at, digit in enumerate(reversed(first_17))
    )
    return (10 - weighted % 10) % 10


@dataclass(frozen=True, order=True, slots=True)
class Ean:
    """A validated 18-digit EAN; `str(ean)` gives the digits."""

    code: str

    def __post_init__(self) -> None:
        code = self.code
        if not isinstance(code, str):
            raise EanError(f"an EAN is written as text, got {type(code).__name__}")
        for position, character in enumerate(code, start=1):
            if character not in _DIGITS:
                raise EanError(
                    f"EAN {code!r} has {character!r} at position {position}; only digits are allowed"
                )
        if len(code) != EAN_LENGTH:
            raise EanError(f"EAN {code!r} has {len(code)} digits; it must have {EAN_LENGTH}")
        expected = check_digit(code[:-1])
        if int(code[-1]) != expected:
            raise EanError(
                f"EAN {code} fails its check digit: the last digit is {code[-1]}, expected {expected}"
                " (a digit is mistyped)"
            )

    @classmethod
    def parse(cls, text: str) -> Ean:
        """Validate an EAN typed by a person: spaces are ignored, anything else must be right."""
        if not isinstance(text, str):
            raise EanError(f"an EAN is written as text, got {type(text).__name__}")
        return cls("".join(text.split()))

    def __str__(self) -> str:
        return self.code
