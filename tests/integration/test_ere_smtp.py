"""Statement e-mails over real SMTP on 127.0.0.1: plain, STARTTLS with AUTH, and failures.

The receiving end is a small SMTP server written here on `socketserver` (RFC 5321 commands
EHLO/HELO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT),
so the test exercises `smtplib` against a real socket peer without extra packages. It can hold
back its answer to the first DATA until the test lets it go: that is how the async delivery is
shown to leave the event loop running, and to stop after the message under way when cancelled.
"""

from __future__ import annotations

import base64
import email
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from email import policy
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme

from proxy.ere.core.statement_mail import (
    PartnerBranding,
    PayoutStatement,
    PricingBasis,
    StatementLine,
    build_statement_message,
    render_html,
)
from proxy.ere.jobs.statement_delivery import (
    Delivery,
    SmtpSettings,
    StatementDeliveryError,
    deliver_statements,
    send_or_write,
)

SENDER = "statements@acme.example"
BRAND = PartnerBranding("Acme Energie", "#1F6F5C", footer_text="Acme Energie B.V.")
STATEMENT = PayoutStatement(
    statement_id="2026Q1-cust-42",
    customer_name="Jan de Vries",
    customer_email="jan@example.nl",
    period_label="2026 Q1",
    sessions=(StatementLine(date(2026, 1, 3), Decimal("42.37")),),
    ere=Decimal("14.10"),
    unit_price=Decimal("0.25"),
    pricing_basis=PricingBasis.PER_ERE,
    gross=Decimal("3.53"),
    fee=Decimal("0.71"),
    fee_vat=Decimal("0.12"),
    net=Decimal("2.82"),
)
SECOND = replace(
    STATEMENT,
    statement_id="2026Q1-cust-43",
    customer_name="Zoë Jansen",
    customer_email="zoe@example.nl",
)


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    data: bytes
    over_tls: bool
    user: str | None


@dataclass
class Hold:
    """Holds back the answer to the first DATA: `reached` once it is held, until `release`."""

    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    released: bool | None = None  # True: let go by `release`; False: by the fail-safe timeout
    fail_safe_seconds: float = 60.0  # a blocked event loop cannot release it: fail, do not hang


@dataclass
class SmtpReceiver:
    port: int
    tls_context: ssl.SSLContext | None
    credentials: tuple[str, str] | None
    refused_recipients: set[str]
    received: list[Received] = field(default_factory=list)
    hold: Hold | None = None


class _SmtpConversation(socketserver.BaseRequestHandler):
    """One SMTP conversation; the server object carries the configuration and the mailbox."""

    server: _SmtpServer

    def handle(self) -> None:
        connection: socket.socket = self.request
        reader = connection.makefile("rb")
        over_tls, user = False, None
        mail_from: str | None = None
        recipients: list[str] = []
        receiver = self.server.receiver

        def reply(*lines: str) -> None:
            connection.sendall("".join(f"{line}\r\n" for line in lines).encode("ascii"))

        try:
            reply("220 receiver.test ESMTP")
            while line := reader.readline():
                command = line.decode("ascii").rstrip("\r\n")
                verb, _, argument = command.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    features = ["8BITMIME"]
                    if receiver.tls_context is not None and not over_tls:
                        features.append("STARTTLS")
                    if receiver.credentials is not None and over_tls:
                        features.append("AUTH PLAIN")
                    reply(
                        "250-receiver.test",
                        *(f"250-{f}" for f in features[:-1]),
                        f"250 {features[-1]}",
                    )
                elif verb == "HELO":
                    reply("250 receiver.test")
                elif verb == "STARTTLS" and receiver.tls_context is not None and not over_tls:
                    reply("220 go ahead")
                    reader.close()
                    connection = receiver.tls_context.wrap_socket(connection, server_side=True)
                    reader = connection.makefile("rb")
                    over_tls = True
                elif verb == "AUTH" and receiver.credentials is not None and over_tls:
                    mechanism, _, encoded = argument.partition(" ")
                    _, name, password = base64.b64decode(encoded).decode("utf-8").split("\0")
                    if mechanism.upper() == "PLAIN" and (name, password) == receiver.credentials:
                        user = name
                        reply("235 authenticated")
                    else:
                        reply("535 authentication failed")
                elif verb == "MAIL":
                    mail_from, recipients = _angle(argument), []
                    reply("250 sender ok")
                elif verb == "RCPT":
                    recipient = _angle(argument)
                    if recipient in receiver.refused_recipients:
                        reply("550 no such mailbox")
                    else:
                        recipients.append(recipient)
                        reply("250 recipient ok")
                elif verb == "DATA" and mail_from is not None and recipients:
                    reply("354 end with <CRLF>.<CRLF>")
                    body = bytearray()
                    while (data_line := reader.readline()) not in (b".\r\n", b""):
                        body += data_line[1:] if data_line.startswith(b"..") else data_line
                    receiver.received.append(
                        Received(mail_from, recipients, bytes(body), over_tls, user)
                    )
                    mail_from, recipients = None, []
                    hold = receiver.hold
                    if hold is not None and hold.released is None:
                        hold.reached.set()
                        hold.released = hold.release.wait(hold.fail_safe_seconds)
                    reply("250 queued")
                elif verb in ("RSET", "NOOP"):
                    if verb == "RSET":
                        mail_from, recipients = None, []
                    reply("250 ok")
                elif verb == "QUIT":
                    reply("221 bye")
                    break
                else:
                    reply("502 command not implemented")
        finally:
            reader.close()
            if connection is not self.request:
                connection.close()


def _angle(argument: str) -> str:
    return argument.split(":", 1)[1].strip().split()[0].strip("<>")


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, receiver: SmtpReceiver) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpConversation)
        self.receiver = receiver
        self.errors: list[BaseException] = []  # e.g. a TLS handshake the client refused
        receiver.port = self.server_address[1]

    def handle_error(self, request: object, client_address: object) -> None:
        self.errors.append(sys.exc_info()[1])  # type: ignore[arg-type]


@pytest.fixture
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and a client context trusting it."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    return server_context, client_context


def _serve(receiver: SmtpReceiver) -> Iterator[SmtpReceiver]:
    server = _SmtpServer(receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def plain_receiver() -> Iterator[SmtpReceiver]:
    yield from _serve(SmtpReceiver(0, None, None, {"refused@example.nl"}))


@pytest.fixture
def holding_receiver() -> Iterator[SmtpReceiver]:
    yield from _serve(SmtpReceiver(0, None, None, set(), hold=Hold()))


@pytest.fixture
def tls_receiver(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[SmtpReceiver]:
    yield from _serve(SmtpReceiver(0, tls_pair[0], ("acme", "s3cret"), set()))


def _messages(*statements: PayoutStatement) -> list[email.message.EmailMessage]:
    dated = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
    return [build_statement_message(s, BRAND, sender=SENDER, dated=dated) for s in statements]


def test_statements_are_delivered_over_plain_smtp(
    plain_receiver: SmtpReceiver, tmp_path: Path
) -> None:
    settings = SmtpSettings("127.0.0.1", plain_receiver.port, starttls=False, timeout_seconds=5)

    deliveries = send_or_write(_messages(STATEMENT, SECOND), settings, tmp_path)

    assert [(d.recipients, d.path) for d in deliveries] == [
        (("jan@example.nl",), None),
        (("zoe@example.nl",), None),
    ]
    assert [(r.mail_from, r.recipients, r.over_tls) for r in plain_receiver.received] == [
        (SENDER, ["jan@example.nl"], False),
        (SENDER, ["zoe@example.nl"], False),
    ]
    parsed = email.message_from_bytes(plain_receiver.received[1].data, policy=policy.default)
    assert parsed["Message-ID"] == "<2026Q1-cust-43@acme.example>"
    assert parsed["To"].addresses[0].display_name == "Zoë Jansen"
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    assert html_part.get_content().replace("\r\n", "\n") == render_html(SECOND, BRAND)
    assert list(tmp_path.iterdir()) == []  # SMTP configured: no files


def test_starttls_and_login_before_sending(
    tls_receiver: SmtpReceiver, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], tmp_path: Path
) -> None:
    settings = SmtpSettings(
        "127.0.0.1",
        tls_receiver.port,
        username="acme",
        password="s3cret",
        timeout_seconds=5,
        ssl_context=tls_pair[1],
    )

    send_or_write(_messages(STATEMENT), settings, tmp_path)

    (received,) = tls_receiver.received
    assert (received.over_tls, received.user, received.recipients) == (
        True,
        "acme",
        ["jan@example.nl"],
    )


def test_an_untrusted_certificate_stops_before_anything_is_sent(
    tls_receiver: SmtpReceiver, tmp_path: Path
) -> None:
    settings = SmtpSettings(
        "127.0.0.1", tls_receiver.port, username="acme", password="s3cret", timeout_seconds=5
    )

    with pytest.raises(StatementDeliveryError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        send_or_write(_messages(STATEMENT), settings, tmp_path)

    assert caught.value.delivered == ()
    assert isinstance(caught.value.__cause__, ssl.SSLError)
    assert tls_receiver.received == []


def test_wrong_credentials_are_a_delivery_error(
    tls_receiver: SmtpReceiver, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], tmp_path: Path
) -> None:
    settings = SmtpSettings(
        "127.0.0.1",
        tls_receiver.port,
        username="acme",
        password="wrong",
        timeout_seconds=5,
        ssl_context=tls_pair[1],
    )
    with pytest.raises(StatementDeliveryError, match="535"):
        send_or_write(_messages(STATEMENT), settings, tmp_path)
    assert tls_receiver.received == []


def test_a_refused_recipient_stops_the_run_and_reports_what_went_out(
    plain_receiver: SmtpReceiver, tmp_path: Path
) -> None:
    refused = replace(SECOND, customer_email="refused@example.nl")
    third = replace(STATEMENT, statement_id="2026Q1-cust-44")
    settings = SmtpSettings("127.0.0.1", plain_receiver.port, starttls=False, timeout_seconds=5)

    with pytest.raises(StatementDeliveryError) as caught:
        send_or_write(_messages(STATEMENT, refused, third), settings, tmp_path)

    assert [d.message_id for d in caught.value.delivered] == ["<2026Q1-cust-42@acme.example>"]
    assert caught.value.failed_message_id == "<2026Q1-cust-43@acme.example>"
    assert [r.recipients for r in plain_receiver.received] == [["jan@example.nl"]]


def test_an_unreachable_server_is_a_delivery_error(tmp_path: Path) -> None:
    with socket.socket() as placeholder:  # a port that was free a moment ago, nobody listening
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    settings = SmtpSettings("127.0.0.1", port, starttls=False, timeout_seconds=5)

    with pytest.raises(StatementDeliveryError, match=f"127.0.0.1:{port}") as caught:
        send_or_write(_messages(STATEMENT), settings, tmp_path)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def _until_held(hold: Hold) -> None:
    while not hold.reached.is_set():
        await trio.sleep(0.01)


async def test_a_delivery_waiting_on_the_server_leaves_the_event_loop_running(
    holding_receiver: SmtpReceiver, tmp_path: Path
) -> None:
    hold = holding_receiver.hold
    assert hold is not None
    settings = SmtpSettings("127.0.0.1", holding_receiver.port, starttls=False, timeout_seconds=120)
    deliveries: list[Delivery] = []
    delivered = trio.Event()
    ticks = 0

    async def deliver() -> None:
        deliveries.extend(
            await deliver_statements(_messages(STATEMENT, SECOND), settings, tmp_path)
        )
        delivered.set()

    async def tick() -> None:
        nonlocal ticks
        while not delivered.is_set():
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(deliver)
        nursery.start_soon(tick)
        await _until_held(hold)
        # smtplib is waiting for the answer to DATA, and this task and the ticker still run.
        assert not delivered.is_set()
        seen = ticks
        while ticks < seen + 3:
            await trio.lowlevel.checkpoint()
        hold.release.set()

    assert hold.released is True  # let go from this event loop, not by the server's fail-safe
    assert [d.recipients for d in deliveries] == [("jan@example.nl",), ("zoe@example.nl",)]
    assert [r.recipients for r in holding_receiver.received] == [
        ["jan@example.nl"],
        ["zoe@example.nl"],
    ]


async def test_a_cancelled_delivery_finishes_the_message_under_way_and_starts_no_other(
    holding_receiver: SmtpReceiver, tmp_path: Path
) -> None:
    hold = holding_receiver.hold
    assert hold is not None
    settings = SmtpSettings("127.0.0.1", holding_receiver.port, starttls=False, timeout_seconds=120)
    scope = trio.CancelScope()
    outcome: list[str] = []

    async def deliver() -> None:
        with scope:
            await deliver_statements(_messages(STATEMENT, SECOND), settings, tmp_path)
            outcome.append("returned")
        if scope.cancelled_caught:
            outcome.append("cancelled")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(deliver)
        await _until_held(hold)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == []  # the thread is not abandoned: the message under way comes first
        hold.release.set()

    assert outcome == ["cancelled"]
    assert [r.recipients for r in holding_receiver.received] == [["jan@example.nl"]]
