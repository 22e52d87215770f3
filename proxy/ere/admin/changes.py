"""Checked inputs for changes to recorded ERE data, and the evidence each change carries.

A change to a link or a mandate is never an edit: a link period is ended (`LinkEnd`) or ended and
followed by a new one (`LinkMove`), a mandate is revoked (`MandateRevocation`), a customer is
referred once (`ReferralRecord`). The record functions are told who made it (`actor`: `--actor`,
default the OS user name); a change says why (`--reason`) and may point at a document (`--document FILE`: its SHA-256 is stored,
the file is not). `channel` says how it reached us: `cli`, `api` or `import`.

Rules: actor 1-100 characters and reason 1-500 characters of plain text (as in
`proxy.ere.admin.validation`); a document is a regular file of at most 20 MB (`/dev/zero`, a
directory, a missing or unreadable file are refused); `--at` is an ISO 8601 timestamp with a UTC
offset, `--effective` a date. What needs the database (an open link, an unrevoked mandate, the
latest closed quarter) is checked where the change is written.

Errors: `AdminInputError` naming the option, one line.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import stat
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from proxy.ere.admin.validation import (
    AdminInputError,
    choice,
    clean_text,
    normalise_ean,
    normalise_referral_code,
    parse_date,
    parse_instant,
    parse_watts,
    parse_year,
    required,
    shown,
    validate_charger_identity,
    validate_id,
)

__all__ = [
    "CHANNELS",
    "MAX_DOCUMENT_BYTES",
    "LinkEnd",
    "LinkMove",
    "MandateRevocation",
    "ReferralRecord",
    "default_actor",
    "hash_document",
    "parse_reason",
    "validate_actor",
    "validate_channel",
]

CHANNELS = ("cli", "api", "import")
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
_CHUNK = 1024 * 1024


def default_actor() -> str:
    """The OS user running the command (its uid when the system has no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def validate_actor(value: str | None, field: str = "--actor") -> str:
    """Who records a change: plain text of 1-100 characters (default: the OS user)."""
    return required(clean_text(default_actor() if value is None else value, field, max_chars=100))


def validate_channel(value: str) -> str:
    """How a record reached us: one of CHANNELS."""
    return choice(value, "channel", CHANNELS, "a channel")


def parse_reason(value: str, field: str = "--reason") -> str:
    """Why a change is made: plain text of 1-500 characters."""
    return required(clean_text(value, field, max_chars=500))


def hash_document(path: str, field: str = "--document") -> str:
    """The SHA-256 (lower-case hex) of a regular file of at most MAX_DOCUMENT_BYTES."""
    try:
        with open(path, "rb") as document:
            if not stat.S_ISREG(os.fstat(document.fileno()).st_mode):
                raise AdminInputError(f"{field}: {shown(path)} is not a regular file")
            digest, size = hashlib.sha256(), 0
            while chunk := document.read(_CHUNK):
                size += len(chunk)
                if size > MAX_DOCUMENT_BYTES:
                    raise AdminInputError(
                        f"{field}: {shown(path)} is larger than {MAX_DOCUMENT_BYTES // 2**20} MB"
                    )
                digest.update(chunk)
    except AdminInputError:
        raise
    except FileNotFoundError:
        raise AdminInputError(f"{field}: {shown(path)} does not exist") from None
    except IsADirectoryError:
        raise AdminInputError(f"{field}: {shown(path)} is a directory, not a file") from None
    except PermissionError:
        raise AdminInputError(
            f"{field}: {shown(path)} cannot be read (permission denied)"
        ) from None
    except (OSError, ValueError) as error:  # a NUL in the name, a name too long, an I/O error
        reason = getattr(error, "strerror", None) or "not a usable file name"
        raise AdminInputError(f"{field}: {shown(path)} cannot be read ({reason})") from None
    if size == 0:
        raise AdminInputError(f"{field}: {shown(path)} is empty")
    return digest.hexdigest()


def _optional_instant(value: str | None, field: str) -> datetime | None:
    return None if value is None else parse_instant(value, field)


@dataclass(frozen=True, slots=True)
class LinkEnd:
    """`links end`: end a charger's open link period at `at` (None: now)."""

    identity: str
    reason: str
    at: datetime | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LinkEnd:
        return cls(
            identity=validate_charger_identity(args.identity),
            reason=parse_reason(args.reason),
            at=_optional_instant(args.at, "--at"),
        )


@dataclass(frozen=True, slots=True)
class LinkMove:
    """`links move`: end the open period at `at` and open one for another customer there."""

    identity: str
    customer_id: str
    reason: str
    at: datetime | None
    max_power_w: Decimal | None  # None: the ended period's

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LinkMove:
        return cls(
            identity=validate_charger_identity(args.identity),
            customer_id=validate_id(args.to_customer, "--to-customer"),
            reason=parse_reason(args.reason),
            at=_optional_instant(args.at, "--at"),
            max_power_w=None if args.max_power_w is None else parse_watts(args.max_power_w),
        )


@dataclass(frozen=True, slots=True)
class MandateRevocation:
    """`mandates revoke`: the mandate of `ean` for `year` covers up to `effective` (None: today)."""

    ean: str
    year: int
    reason: str
    effective: date | None
    reference: str | None
    document_sha256: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MandateRevocation:
        return cls(
            ean=normalise_ean(args.ean),
            year=parse_year(args.year),
            reason=parse_reason(args.reason),
            effective=None if args.effective is None else parse_date(args.effective, "--effective"),
            reference=clean_text(args.reference, "--reference", max_chars=200, required=False),
            document_sha256=None if args.document is None else hash_document(args.document),
        )


@dataclass(frozen=True, slots=True)
class ReferralRecord:
    """`referrals record`: `customer_id` was referred with `code` (a customer's or a partner's)."""

    customer_id: str
    code: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReferralRecord:
        return cls(validate_id(args.customer_id, "customer id"), normalise_referral_code(args.code))
