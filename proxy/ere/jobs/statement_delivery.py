"""Delivering payout statements: over SMTP, or as `.eml` files when no SMTP server is set.

`send_or_write` is the blocking shell around the messages `proxy.ere.core.statement_mail`
builds: one SMTP connection for all of them (upgraded with STARTTLS unless told otherwise;
credentials are only ever sent after it), or, without SMTP settings, one `.eml` file per message
in `statement_dir`, written whole or not at all. It stops at the first failure and says which
messages went out before it (`StatementDeliveryError`).

`deliver_statements` is the same for async code: it runs `send_or_write` in a worker thread
(`trio.to_thread.run_sync`), so the event loop keeps running while smtplib waits for the server
or a file is synced to disk.

Cancellation: the thread is never abandoned; it checks for cancellation before each message. A
cancel lets the message under way finish (every SMTP step is bounded by `timeout_seconds`; a
file is written whole or not at all), starts no further message, closes the SMTP connection,
and then raises `trio.Cancelled`. Mail has no transactions: a cancelled or failed `statements`
job records no deliveries, so the messages that did go out are sent again when it reruns (at
least once).
"""

from __future__ import annotations

import smtplib
import ssl
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import trio

from proxy.ere.core.statement_mail import message_token
from proxy.ere.jobs.files import write_atomically

__all__ = [
    "Delivery",
    "SmtpSettings",
    "StatementDeliveryError",
    "deliver_statements",
    "send_or_write",
]

_WIRE_POLICY = policy.SMTP  # CRLF line ends, as on the wire


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where to send statements. Credentials are only ever sent after STARTTLS.

    `ssl_context` overrides the default (system CAs, hostname checked). Raises `ValueError`
    for a username without STARTTLS.
    """

    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.username is not None and not self.starttls:
            raise ValueError("refusing to send SMTP credentials without STARTTLS")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where one message went: sent over SMTP (`path` None) or written to `path`."""

    message_id: str
    recipients: tuple[str, ...]
    path: Path | None


class StatementDeliveryError(Exception):
    """Sending or writing stopped at one message; `delivered` lists the ones that went out."""

    def __init__(
        self, message: str, *, failed_message_id: str, delivered: Sequence[Delivery]
    ) -> None:
        super().__init__(message)
        self.failed_message_id = failed_message_id
        self.delivered = tuple(delivered)


async def deliver_statements(
    messages: Sequence[EmailMessage], smtp_settings: SmtpSettings | None, out_dir: Path
) -> list[Delivery]:
    """`send_or_write` in a worker thread; cancellation as the module docstring describes."""
    deliver = partial(
        send_or_write, messages, smtp_settings, out_dir, checkpoint=trio.from_thread.check_cancelled
    )
    return await trio.to_thread.run_sync(deliver)


def send_or_write(
    messages: Sequence[EmailMessage],
    smtp_settings: SmtpSettings | None,
    out_dir: Path,
    *,
    checkpoint: Callable[[], None] | None = None,
) -> list[Delivery]:
    """Send `messages` over one SMTP connection, or, without settings, write them to `out_dir`.

    Files are named after the Message-ID (`<token>.eml`), written atomically, and replace an
    earlier file of the same statement. Stops at the first failure and raises
    `StatementDeliveryError` (the cause chained) listing what was delivered before it. A
    message without a Message-ID, or two with the same one, are refused with `ValueError`
    before anything is delivered. `checkpoint`, if given, is called before each message; what
    it raises stops the delivery there (the SMTP connection is closed) and propagates.

    This blocks on the network and the disk: from async code, use `deliver_statements`.
    """
    tokens = [_token_of(message) for message in messages]
    duplicates = sorted(token for token, count in Counter(tokens).items() if count > 1)
    if duplicates:
        raise ValueError(f"several messages share the Message-ID token(s) {duplicates}")
    if not messages:
        return []
    if smtp_settings is None:
        return _write_all(messages, tokens, Path(out_dir), checkpoint or _carry_on)
    return _send_all(messages, smtp_settings, checkpoint or _carry_on)


def _write_all(
    messages: Sequence[EmailMessage],
    tokens: list[str],
    out_dir: Path,
    checkpoint: Callable[[], None],
) -> list[Delivery]:
    delivered: list[Delivery] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for message, token in zip(messages, tokens, strict=True):
        checkpoint()
        path = out_dir / f"{token}.eml"
        try:
            write_atomically(path, message.as_bytes(policy=_WIRE_POLICY))
        except OSError as error:
            raise StatementDeliveryError(
                f"writing {path.name} failed: {error}",
                failed_message_id=str(message["Message-ID"]),
                delivered=delivered,
            ) from error
        delivered.append(Delivery(str(message["Message-ID"]), _recipients(message), path))
    return delivered


def _send_all(
    messages: Sequence[EmailMessage], settings: SmtpSettings, checkpoint: Callable[[], None]
) -> list[Delivery]:
    delivered: list[Delivery] = []
    current = str(messages[0]["Message-ID"])
    try:
        with smtplib.SMTP(
            settings.host, settings.port, timeout=settings.timeout_seconds
        ) as connection:
            if settings.starttls:
                connection.starttls(context=settings.ssl_context or ssl.create_default_context())
            if settings.username is not None:
                connection.login(settings.username, settings.password or "")
            for message in messages:
                checkpoint()
                current = str(message["Message-ID"])
                connection.send_message(message)
                delivered.append(Delivery(current, _recipients(message), None))
    except (smtplib.SMTPException, OSError) as error:
        raise StatementDeliveryError(
            f"sending {current} over SMTP to {settings.host}:{settings.port} failed: {error}",
            failed_message_id=current,
            delivered=delivered,
        ) from error
    return delivered


def _token_of(message: EmailMessage) -> str:
    message_id = message["Message-ID"]
    if not message_id:
        raise ValueError(f"message to {message['To']!r} has no Message-ID")
    local_part = str(message_id).strip().strip("<>").split("@", 1)[0]
    return message_token(local_part)


def _recipients(message: EmailMessage) -> tuple[str, ...]:
    return tuple(address.addr_spec for address in message["To"].addresses)


def _carry_on() -> None:
    """The checkpoint of a delivery nobody can cancel."""
