"""Configuration: one TOML file, decoded into typed structs.

Loading fails with `ConfigError` naming the bad field; a running proxy keeps its old configuration
when a reload (SIGHUP) fails (see `proxy.runtime.role.reload_config`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import field

from proxy.wire.ocpp import SUPPORTED_SUBPROTOCOLS


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class CannotStart(Exception):
    """The configuration is valid but this machine refuses it: a port in use, or not permitted.

    The message says what and where in one line; the process exits with `EXIT_CANNOT_START`
    and a supervisor does not restart it (it would fail again).
    """


EXIT_CANNOT_START = 3


def _check_port(name: str, port: int) -> None:
    if not 0 <= port <= 65535:  # 0: any free port
        raise ValueError(f"{name} must be between 0 and 65535")


class ProxySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 9000
    # Chargers connect to <scheme>://host:port<path_prefix>/<percent-encoded identity>.
    path_prefix: str = "/ocpp"
    workers: int = 1
    # Treat a charger that offers no subprotocol as speaking this one (some chargers send none).
    default_subprotocol: str = "ocpp1.6"
    handshake_timeout: float = 10.0
    dial_timeout: float = 10.0
    idle_timeout: float = 900.0
    close_timeout: float = 5.0
    drain_timeout: float = 10.0
    max_message_size: int = 1 << 20
    max_header_size: int = 16 * 1024
    tls_cert: str | None = None
    tls_key: str | None = None
    # Client certificates (security profile 3): chargers presenting one must present one this CA
    # bundle verifies (PEM); tls_crl: a PEM file of CRLs checked for the charger's certificate
    # (it must be kept current: an expired CRL fails every client certificate). Both are reread
    # on SIGHUP with the listener's certificate.
    tls_client_ca: str | None = None
    tls_crl: str | None = None
    # How a client certificate is bound to the identity in the URL: "cn" (the subject's common
    # name is the identity, OCPP 2.0.1), "san_uri" (a subjectAltName URI ending in the identity)
    # or "none" (any certificate the CA issued).
    client_cert_identity: Literal["cn", "san_uri", "none"] = "cn"
    # Local addresses upstream connections are made from, in turn (empty: the system's choice).
    # One source address reaches one upstream address and port through at most as many
    # connections as there are ephemeral ports (~28,000 by default): list more for bigger fleets.
    upstream_source_addresses: tuple[str, ...] = ()
    # Every this many seconds what survived the young collections is frozen, out of the garbage
    # collector's full passes (which walk every link's objects); 0: only once, after start-up.
    gc_freeze_interval: float = 10.0
    # "native": after the handshake, links between plain TCP sockets are forwarded by the Rust
    # engine (a thread per worker); "python": by the Trio pumps (the reference path).
    engine: str = "native"

    def __post_init__(self) -> None:
        _check_port("proxy.port", self.port)
        if self.engine not in ("native", "python"):
            raise ValueError('proxy.engine must be "native" or "python"')
        if not self.gc_freeze_interval >= 0:
            raise ValueError("proxy.gc_freeze_interval must be 0 or a positive number of seconds")
        for address in self.upstream_source_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(
                    f"proxy.upstream_source_addresses: {address!r} is not an IP address"
                ) from None
        if self.workers < 1:
            raise ValueError("proxy.workers must be at least 1")
        for name in (
            "handshake_timeout",
            "dial_timeout",
            "idle_timeout",
            "close_timeout",
            "drain_timeout",
        ):
            if not getattr(self, name) > 0:  # also rejects NaN
                raise ValueError(f"proxy.{name} must be a positive number of seconds")
        for name in ("max_message_size", "max_header_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"proxy.{name} must be a positive number of bytes")


class AdminSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    # Worker i of `--workers N` serves /metrics, /healthz and /readyz on port + i.
    port: int = 9100

    def __post_init__(self) -> None:
        _check_port("admin.port", self.port)


class LogSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"


_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")
# What the proxy sets on its embedded server itself (`proxy.store.embedded`).
EMBEDDED_OWN_SETTINGS = frozenset({"listen_addresses", "unix_socket_directories", "port"})


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # PostgreSQL URL (postgresql://user:password@host:port/dbname); empty: an embedded server.
    dsn: str = ""
    # The embedded server's files (and the journal's spill logs) go under this directory. By
    # default ./data, or /var/lib/ere-proxy when running as root: the server then runs as an
    # unprivileged user, which must be able to reach the directory.
    data_dir: str = field(
        default_factory=lambda: "/var/lib/ere-proxy" if os.geteuid() == 0 else "data"
    )
    # Connections kept open per process.
    pool_size: int = 10
    # How long to keep trying to connect at start before giving up.
    connect_timeout: float = 10.0
    # Deadline of every statement: the server cancels it (statement_timeout) and the client
    # gives up a little later (a connection to a stalled server is then closed). The ERE worker
    # processes use [ere] query_timeout instead (a quarter's close runs long statements).
    query_timeout: float = 30.0
    # postgresql.conf settings of the embedded server (ignored with a dsn), applied when a process
    # of this data_dir starts it: e.g. shared_buffers = "1GB" for books of millions of sessions.
    embedded_settings: dict[str, str | int | float | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.query_timeout > 0:
            raise ValueError("database.query_timeout must be a positive number of seconds")
        for name in self.embedded_settings:
            if not _SETTING_NAME.fullmatch(name):
                raise ValueError(f"database.embedded_settings: {name!r} is not a setting name")
            if name in EMBEDDED_OWN_SETTINGS:
                raise ValueError(
                    f"database.embedded_settings: {name} is the proxy's own (the embedded server "
                    "listens only on its socket in data_dir)"
                )
        if self.dsn and urlsplit(self.dsn).scheme not in ("postgres", "postgresql"):
            raise ValueError(
                "database.dsn must be a postgresql:// URL (or empty for the embedded server)"
            )
        if not self.data_dir:
            raise ValueError("database.data_dir must not be empty")
        if self.pool_size < 1:
            raise ValueError("database.pool_size must be at least 1")
        if not self.connect_timeout > 0:
            raise ValueError("database.connect_timeout must be a positive number of seconds")

    def embedded_server_settings(self) -> dict[str, str]:
        """`embedded_settings` as postgresql.conf text (true/false as on/off)."""
        return {
            name: ("on" if value else "off") if isinstance(value, bool) else str(value)
            for name, value in self.embedded_settings.items()
        }


class CaptureSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Session capture: every link's events go through the journal into the database."""

    enabled: bool = True
    # Events waiting in memory for the database writer before they go to the spill log.
    queue_events: int = 10_000
    # Bound of each worker's on-disk spill log (under <database.data_dir>/spill/worker-<i>).
    spill_max_bytes: int = 1 << 30
    # Bound of the spilled events each worker holds in memory while they cannot be written to disk
    # (disk full, I/O errors); beyond it events are lost, loudly.
    spill_buffer_bytes: int = 64 << 20
    # An active session without news for this long is closed as orphaned (seconds; default 2 days,
    # since chargers deliver queued StopTransactions late after an outage).
    orphan_after: float = 2 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.queue_events < 1 or self.spill_max_bytes < 1 or self.spill_buffer_bytes < 1:
            raise ValueError(
                "capture.queue_events, spill_max_bytes and spill_buffer_bytes must be positive"
            )
        if not self.orphan_after > 0:
            raise ValueError("capture.orphan_after must be a positive number of seconds")


class RegistrySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The charger registry in the database (`ere-proxy chargers ...`, see `registry.py`)."""

    # Route chargers from the database first (TOML [chargers]/[default_route] as fallback).
    enabled: bool = True
    # Base URL chargers are given, e.g. wss://proxy.example.com/ocpp (the percent-encoded
    # identity is appended); empty: derived from [proxy] host, port, path_prefix and TLS.
    public_url: str = ""
    # Environment variable holding the key(s) that encrypt upstream secrets in the database:
    # comma-separated base64 32-byte keys, the first encrypts, all decrypt (for key rotation).
    secret_key_env: str = "ERE_PROXY_SECRET_KEY"
    # Seconds between looking for changed chargers; every full_reload_interval all are reread.
    refresh_interval: float = 5.0
    full_reload_interval: float = 300.0

    def __post_init__(self) -> None:
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ValueError("registry.public_url must be a ws:// or wss:// URL")
        if not self.secret_key_env:
            raise ValueError("registry.secret_key_env must name an environment variable")
        if not (self.refresh_interval > 0 and self.full_reload_interval > 0):
            raise ValueError(
                "registry.refresh_interval and registry.full_reload_interval must be positive"
            )


class OutboxSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Offline answering and replay while a charger's upstream is unreachable (`outbox.py`)."""

    # Needs the database (the outbox lives in PostgreSQL so any worker or node can replay it).
    enabled: bool = True
    # Bounds: entries and payload bytes per charger, and in total per database.
    max_entries_per_charger: int = 10_000
    max_bytes_per_charger: int = 8 << 20
    max_entries_total: int = 10_000_000
    max_bytes_total: int = 8 << 30
    # Offline answers: BootNotification interval (seconds), and the status an idTag the
    # authorisation cache does not know gets ("Invalid" refuses it, as OCPP's own
    # AllowOfflineTxForUnknownId=false; "Accepted" keeps every car charging).
    heartbeat_interval: int = 300
    unknown_id_tag: Literal["Accepted", "Invalid"] = "Invalid"
    # 1.6 provisional transactionIds are this base plus the entry's sequence number.
    provisional_id_base: int = 2_000_000_000
    # Replay: an entry answered with CALLERRORs is sent this many times in all, waiting
    # retry_interval × attempt in between, then parked as a dead letter; an unanswered replayed
    # CALL (call_timeout) drops the connection.
    retry_attempts: int = 3
    retry_interval: float = 30.0
    call_timeout: float = 30.0
    # Redialling an unreachable upstream: exponential back-off between these bounds, with jitter,
    # after every failed dial and every lost connection (it starts again from redial_min only
    # after a connection stayed up redial_max seconds); and at most redial_rate_per_host dials
    # per second (and as many at once) to one upstream host from one process.
    redial_min: float = 1.0
    redial_max: float = 60.0
    redial_rate_per_host: float = 50.0
    # Seconds between a process's checks whether a charger one of its links holds was taken over
    # by a newer link on another node or worker (that link is then closed with 1001).
    takeover_check_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "max_entries_per_charger",
            "max_bytes_per_charger",
            "max_entries_total",
            "max_bytes_total",
            "heartbeat_interval",
            "retry_attempts",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"outbox.{name} must be at least 1")
        for name in (
            "retry_interval",
            "call_timeout",
            "redial_min",
            "redial_max",
            "redial_rate_per_host",
            "takeover_check_interval",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"outbox.{name} must be a positive number of seconds")
        if self.redial_max < self.redial_min:
            raise ValueError("outbox.redial_max must not be below outbox.redial_min")
        if not 0 < self.provisional_id_base < 2**31 - 1:
            raise ValueError("outbox.provisional_id_base must fit a 32-bit transactionId")


class EreSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """ERE accounting: the worker processes, quarterly closes, payouts and statements."""

    # Worker processes `run` starts (each `ere-proxy worker` is one); 0: none on this machine.
    workers: int = 1
    # Worker i serves /metrics on admin_port + i (0: no endpoint).
    admin_port: int = 0
    admin_host: str = "127.0.0.1"
    # How often an idle worker looks for due jobs (seconds); a failed job is retried after
    # retry_base × 2^(attempt-1) seconds, up to max_attempts attempts in all.
    poll_interval: float = 1.0
    # How often worker 0 re-reads the pipeline figures it exports from the database (seconds).
    pipeline_refresh: float = 30.0
    # Deadline of every statement of the worker processes (see [database] query_timeout).
    query_timeout: float = 600.0
    retry_base: float = 30.0
    max_attempts: int = 5
    # A quarter's close is split into this many jobs (customers by hash), for parallel workers.
    close_shards: int = 8
    # The factor table (ERE factors per year, prices per quarter); empty: the one shipped.
    factors_file: str = ""
    # Payouts: amounts below the minimum carry over to the next quarter.
    payout_minimum: str = "10.00"
    payout_dir: str = "payouts"
    debtor_name: str = ""
    debtor_iban: str = ""
    debtor_bic: str = ""
    remittance: str = "ERE payout {quarter}"
    # Statements: sent over SMTP when smtp_host is set, written as .eml files to statement_dir otherwise.
    statement_dir: str = "statements"
    sender: str = "statements@localhost"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password_env: str = "ERE_PROXY_SMTP_PASSWORD"
    # A quarter can be closed once it has ended and this many days of late data have passed.
    close_grace_days: int = 7
    # Referrals: each active referral lowers the fee rate by this much, down to the 10 % floor.
    referral_step: str = "0.02"
    # Clock sanity: charger timestamps more than clock_ahead_seconds after the moment a frame
    # arrived, or more than max_clock_lag_days before it (longer than an offline queue is
    # kept), mark the session `charger_clock` instead of counting it.
    clock_ahead_seconds: float = 300.0
    max_clock_lag_days: int = 35
    # The maximum-power check allows this much energy (Wh) above max power × duration: meter
    # registers count in whole Wh and timestamps in whole seconds (0: none).
    max_power_margin_wh: int = 100
    # The booking provider (us): on every statement's invoice part and in the REV export.
    provider_name: str = ""
    provider_address: str = ""
    provider_kvk: str = ""
    provider_vat_number: str = ""
    provider_nea_account: str = ""
    # Invoice numbers are this prefix, the year and a sequence number per year (ERE-2026-000001).
    invoice_prefix: str = "ERE"
    # Events, sessions, assessments, statements and payouts are kept at least this long.
    retention_years: int = 5

    def __post_init__(self) -> None:
        if self.close_grace_days < 0 or self.max_clock_lag_days < 1 or self.max_power_margin_wh < 0:
            raise ValueError(
                "ere.close_grace_days and ere.max_power_margin_wh must be >= 0,"
                " ere.max_clock_lag_days >= 1"
            )
        if not self.clock_ahead_seconds > 0:
            raise ValueError("ere.clock_ahead_seconds must be a positive number of seconds")
        if self.retention_years < 5:
            raise ValueError("ere.retention_years must be at least 5 (records are kept 5 years)")
        try:
            step = Decimal(self.referral_step)
        except ArithmeticError:
            step = Decimal(-1)
        if not step.is_finite() or not 0 <= step <= 1:
            raise ValueError(
                f"ere.referral_step must be a fraction like '0.02', got {self.referral_step!r}"
            )
        if self.workers < 0 or self.close_shards < 1 or self.max_attempts < 1:
            raise ValueError("ere.workers must be >= 0, ere.close_shards and ere.max_attempts >= 1")
        for name in ("poll_interval", "retry_base", "pipeline_refresh", "query_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ere.{name} must be a positive number of seconds")
        try:
            minimum = Decimal(self.payout_minimum)
        except ArithmeticError:
            raise ValueError(
                f"ere.payout_minimum must be an amount like '10.00', got {self.payout_minimum!r}"
            ) from None
        if not minimum.is_finite() or minimum < 0 or minimum != minimum.quantize(Decimal("0.01")):
            raise ValueError(
                f"ere.payout_minimum must be a non-negative amount in cents, got {self.payout_minimum!r}"
            )


class OcpiSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """OCPI 2.2.1 (`[api.ocpi]`): who we are to a CPO's platform that pushes us CDRs."""

    # The role, country code and party id our credentials name. OTHER: OCPI treats it as an
    # eMSP-like receiver (a CPO's pushes go to it), and we are no eMobility Service Provider;
    # EMSP for a platform that pushes CDRs to eMSPs only.
    role: Literal["OTHER", "EMSP"] = "OTHER"
    country_code: str = "NL"
    party_id: str = "ERE"
    business_name: str = "ERE proxy"
    # The registration fetches the platform's versions URL: public addresses only, unless true
    # (private, loopback and link-local addresses and http://; development and tests only).
    allow_private: bool = False

    def __post_init__(self) -> None:
        if not (
            len(self.country_code) == 2
            and self.country_code.isascii()
            and self.country_code.isalpha()
        ):
            raise ValueError("api.ocpi.country_code must be two letters (ISO 3166-1 alpha-2)")
        if not (len(self.party_id) == 3 and self.party_id.isascii() and self.party_id.isalnum()):
            raise ValueError("api.ocpi.party_id must be three letters or digits (ISO 15118)")
        if not 0 < len(self.business_name) <= 100 or not self.business_name.isprintable():
            raise ValueError("api.ocpi.business_name must be 1 to 100 printable characters")


class ApiSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The partner API role (`ere-proxy api`; `run` starts it when enabled)."""

    enabled: bool = False
    # Where partners reach it (behind a TLS-terminating load balancer in production).
    host: str = "127.0.0.1"
    port: int = 8300
    # /metrics, /healthz and /readyz for Prometheus and probes, never on the partner port
    # (0: no endpoint).
    admin_port: int = 0
    admin_host: str = "127.0.0.1"
    # Request bodies above this many bytes are refused (413) before they are read.
    max_body_bytes: int = 64 * 1024
    # Requests per partner key (its OAuth2 access tokens count against it): a burst, then
    # this many a second; over it, 429 with Retry-After. Counted per API process.
    rate_limit_per_second: float = 20.0
    rate_limit_burst: int = 100
    # Failed authentications per client address (key guessing): over it, every request from
    # the address is 429 until its allowance refills. Counted per API process.
    failed_auth_per_second: float = 1.0
    failed_auth_burst: int = 30
    # The client's address is the connection's, or, behind this many proxies that append it
    # to X-Forwarded-For (one TLS-terminating load balancer: 1), the one they name; trust no
    # more hops than there are proxies, or a client could name any address.
    forwarded_for_hops: int = 0
    # How long an OAuth2 access token is valid (never beyond its key's expiry).
    access_token_seconds: int = 3600
    # Seconds an API process trusts a key or access token it verified without asking the
    # database again (a busy key is looked up once per period, not per request): revoking,
    # rotating out or expiring a credential takes effect within this (0: every request).
    auth_cache_seconds: float = 2.0
    # MID scans (`POST /v1/scans`): the euros per kWh a yearly estimate uses (the market value
    # to the owner), and the MID meter list declared meters are matched against ("": the
    # shipped proxy/capture/evidence/data/mid_meters.toml; a copy you extended).
    scan_price_per_kwh: str = "0.10"
    scan_mid_meters_file: str = ""
    # Webhooks go to https URLs on public addresses only; true lets them reach private,
    # loopback and link-local addresses over http or https (development and tests only).
    webhooks_allow_private: bool = False
    # Upstreams partners register (`POST /v1/chargers`) must be on public addresses, and their
    # names are resolved and checked again at every dial (the proxy role reads this too); true
    # lets them reach private, loopback and link-local addresses (development and tests only).
    upstreams_allow_private: bool = False
    # Host names partners may register upstreams on: glob patterns, case-insensitive, e.g.
    # ["*.e-flux.nl", "csms.example.com"] (`*` also matches dots); empty: any public host.
    partner_upstream_hosts: tuple[str, ...] = ()
    # Seconds between the scans that find webhook events written by other roles (sessions
    # completed, statements issued, payouts sent, mandates expiring).
    webhook_scan_interval: float = 60.0
    # Hours the answer to an Idempotency-Key is kept; a POST repeated later is a new request.
    idempotency_hours: int = 168
    # The partner dashboard (`/dashboard`, on this port): its log-in cookie is `Secure` (sent
    # over https only; the TLS-terminating load balancer serves the dashboard as https) unless
    # this is false, for browsers reaching the API over plain http (development, tests only).
    dashboard_secure_cookie: bool = True
    # Minutes a dashboard log-in lasts from the moment it is made.
    dashboard_session_minutes: int = 480
    # The base URL partners reach this role at, e.g. https://api.example.nl (OCPI's versions and
    # endpoint URLs are built on it); empty: http://host:port of the lines above.
    public_url: str = ""
    ocpi: OcpiSettings = OcpiSettings()

    def __post_init__(self) -> None:
        _check_port("api.port", self.port)
        _check_port("api.admin_port", self.admin_port)
        if self.admin_port and self.admin_port == self.port:
            raise ValueError("api.admin_port must differ from api.port")
        if not 1024 <= self.max_body_bytes <= 16 << 20:
            raise ValueError("api.max_body_bytes must be between 1024 and 16777216")
        for name in ("rate_limit", "failed_auth"):
            rate, burst = getattr(self, f"{name}_per_second"), getattr(self, f"{name}_burst")
            if not 0.001 <= rate <= 1_000_000:
                raise ValueError(f"api.{name}_per_second must be between 0.001 and 1000000")
            if not 1 <= burst <= 1_000_000:
                raise ValueError(f"api.{name}_burst must be between 1 and 1000000")
        if not 60 <= self.access_token_seconds <= 86_400:
            raise ValueError("api.access_token_seconds must be between 60 and 86400")
        if not 0 <= self.auth_cache_seconds <= 60:
            raise ValueError("api.auth_cache_seconds must be between 0 and 60")
        if not 0 <= self.forwarded_for_hops <= 5:
            raise ValueError("api.forwarded_for_hops must be between 0 and 5")
        if not 1 <= self.idempotency_hours <= 24 * 366:
            raise ValueError("api.idempotency_hours must be between 1 and 8784")
        if not 5 <= self.dashboard_session_minutes <= 7 * 24 * 60:
            raise ValueError("api.dashboard_session_minutes must be between 5 and 10080")
        if not 0.1 <= self.webhook_scan_interval <= 3600:
            raise ValueError("api.webhook_scan_interval must be between 0.1 and 3600 seconds")
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
                raise ValueError("api.public_url must be an http:// or https:// URL")
        for pattern in self.partner_upstream_hosts:
            if not 0 < len(pattern) <= 253 or not pattern.isprintable() or set(" /@") & {*pattern}:
                raise ValueError(f"api.partner_upstream_hosts: {pattern!r} is not a host pattern")
        try:
            price = Decimal(self.scan_price_per_kwh)
        except ArithmeticError:
            price = Decimal(-1)
        if not price.is_finite() or not 0 <= price <= 10 or price.as_tuple().exponent < -4:  # type: ignore[operator]
            raise ValueError(
                "api.scan_price_per_kwh must be euros per kWh like '0.10' (0-10, at most 4"
                f" decimals), got {self.scan_price_per_kwh!r}"
            )


# Headers of the upstream handshake the proxy writes itself (never a forwarded identity's name).
_OWN_HEADERS = frozenset(
    {"host", "upgrade", "connection", "authorization", "content-length", "transfer-encoding"}
)


class Mirror(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A secondary back-office that gets a copy of every CALL (and 2.1 SEND) a charger sends.

    It is dialled with the charger's identity and subprotocol (and `username`/`password` as
    HTTP Basic, if given; never the charger's own credentials). Its CALLs to the charger are
    answered by the proxy with a CALLERROR unless their action is in `allow`. `queue` bounds the
    copies waiting for it; when full, `overflow` drops the oldest (`drop_oldest`) or copies no
    more until there is room (`pause`). `call_timeout` bounds how long an allowed CALL may wait
    for, and hold, the charger. See `proxy.forward.mirror`.
    """

    url: str
    allow: tuple[str, ...] = ()
    queue: int = 100
    overflow: Literal["drop_oldest", "pause"] = "drop_oldest"
    call_timeout: float = 30.0
    username: str | None = None
    password: str | None = None
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if "@" in parts.netloc:
            raise ValueError("mirror url must not carry credentials; use username and password")
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"mirror url must be a ws:// or wss:// URL, got {self.url!r}")
        _ = parts.port  # raises ValueError for a port out of range
        if not 1 <= self.queue <= 1_000_000:
            raise ValueError("mirror queue must be between 1 and 1000000")
        if not 0 < self.call_timeout <= 600:
            raise ValueError("mirror call_timeout must be above 0 and at most 600 seconds")
        if (self.username is None) != (self.password is None):
            raise ValueError("mirror username and password go together")


class Route(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Where one charger's link goes and how it authenticates.

    `passthrough` forwards the charger's Authorization header upstream unchanged; `managed`
    checks the charger's Basic password against `password_hash` and sends
    `upstream_username`/`upstream_password` (if given) upstream instead.
    """

    upstream: str
    auth: Literal["passthrough", "managed"] = "passthrough"
    password_hash: str | None = None
    upstream_username: str | None = None
    upstream_password: str | None = None
    ca_bundle: str | None = None
    # The certificate and key (PEM) the proxy presents to a wss:// back-office that requires
    # mutual TLS; reread on SIGHUP.
    client_cert: str | None = None
    client_key: str | None = None
    # 1 or 2: HTTP Basic (or whatever `auth` says), as without the setting. 3: the charger must
    # present a client certificate bound to its identity ([proxy] tls_client_ca,
    # client_cert_identity); its Authorization header is never checked, there is no fallback.
    security_profile: Literal[1, 2, 3] | None = None
    # A request header (e.g. "X-Client-Cert-CN") that tells the back-office the charger identity
    # its client certificate was verified for; sent only then. Chargers' own headers never reach
    # the back-office, so a charger cannot forge it.
    forward_client_identity: str | None = None
    # Connect only to globally routable addresses of the upstream (its name is resolved and
    # checked at every dial): the registry sets it for chargers partners registered, unless
    # [api] upstreams_allow_private.
    upstream_public_only: bool = False
    # Secondary back-offices that get copies of the charger's CALLs (see `Mirror`).
    mirrors: tuple[Mirror, ...] = ()

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if "@" in parts.netloc:  # never echoed: it would put the credentials in logs and errors
            raise ValueError(
                "upstream must not carry credentials in the URL; use upstream_username and "
                "upstream_password (auth = 'managed') or the charger's own (passthrough)"
            )
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"upstream must be a ws:// or wss:// URL, got {self.upstream!r}")
        _ = parts.port  # raises ValueError for a port out of range
        if self.auth == "managed" and not self.password_hash and self.security_profile != 3:
            raise ValueError("auth = 'managed' needs password_hash (or security_profile = 3)")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.client_cert is not None and parts.scheme != "wss":
            raise ValueError("client_cert needs a wss:// upstream")
        name = self.forward_client_identity
        if name is not None:
            if not name or not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
                raise ValueError(
                    "forward_client_identity must be a header name like X-Client-Cert-CN"
                )
            if name.lower() in _OWN_HEADERS or name.lower().startswith("sec-websocket-"):
                raise ValueError(
                    f"forward_client_identity must not be {name!r}: the proxy sends it"
                )


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    proxy: ProxySettings = ProxySettings()
    admin: AdminSettings = AdminSettings()
    log: LogSettings = LogSettings()
    database: DatabaseSettings = DatabaseSettings()
    capture: CaptureSettings = CaptureSettings()
    registry: RegistrySettings = RegistrySettings()
    outbox: OutboxSettings = OutboxSettings()
    ere: EreSettings = EreSettings()
    api: ApiSettings = ApiSettings()
    # Route for identities not listed under [chargers]; absent means they are refused (404).
    default_route: Route | None = None
    chargers: dict[str, Route] = {}

    def __post_init__(self) -> None:
        if self.proxy.default_subprotocol not in SUPPORTED_SUBPROTOCOLS:
            raise ValueError(f"proxy.default_subprotocol must be one of {SUPPORTED_SUBPROTOCOLS}")
        if (self.proxy.tls_cert is None) != (self.proxy.tls_key is None):
            raise ValueError("proxy.tls_cert and proxy.tls_key go together")
        if self.proxy.tls_client_ca is not None and self.proxy.tls_cert is None:
            raise ValueError(
                "proxy.tls_client_ca needs proxy.tls_cert (client certificates need TLS)"
            )
        if self.proxy.tls_crl is not None and self.proxy.tls_client_ca is None:
            raise ValueError("proxy.tls_crl needs proxy.tls_client_ca")
        routes = dict(self.chargers)
        if self.default_route is not None:
            routes["default_route"] = self.default_route
        for name, route in routes.items():
            if route.security_profile == 3 and self.proxy.tls_client_ca is None:
                raise ValueError(f"{name}: security_profile = 3 needs proxy.tls_client_ca")
            if route.security_profile == 2 and self.proxy.tls_cert is None:
                raise ValueError(f"{name}: security_profile = 2 needs proxy.tls_cert (TLS)")
        if self.proxy.path_prefix and not self.proxy.path_prefix.startswith("/"):
            raise ValueError("proxy.path_prefix must start with '/'")


def load_config(path: str | Path | None) -> Config:
    """Read and validate the TOML file at `path` (None gives the defaults)."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return msgspec.convert(raw, Config)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
