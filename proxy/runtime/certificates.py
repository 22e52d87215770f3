"""When a certificate expires: the not-after time of a PEM file or a peer's DER certificate.

Read for the certificate-expiry gauges (the listener's certificate and the client CA bundle at
start and on SIGHUP, each back-office's certificate at every TLS dial). Error handling: a file that cannot be read, or bytes
that are no certificate, give None (and a warning in the log); nothing a peer presents raises.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509

log = logging.getLogger("proxy.certificates")


def der_not_after(der: bytes | None) -> float | None:
    """Unix time after which the DER-encoded certificate is no longer valid (None: unreadable)."""
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
    except (ValueError, TypeError) as exc:
        log.warning("certificate unreadable", extra={"error": str(exc)})
        return None


def pem_file_not_after(path: str | Path) -> float | None:
    """Unix time after which the first certificate of a PEM file (the leaf) is no longer valid."""
    times = _pem_not_afters(path)
    return times[0] if times else None


def pem_bundle_not_after(path: str | Path) -> float | None:
    """Unix time after which the first certificate of a PEM bundle (e.g. a client CA bundle of
    several CAs) expires: the earliest not-after among them (None: unreadable or no certificate)."""
    times = _pem_not_afters(path)
    return min(times) if times else None


def _pem_not_afters(path: str | Path) -> list[float]:
    """The not-after times of a PEM file's certificates, in order (empty: unreadable, logged)."""
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        log.warning("certificate unreadable", extra={"certificate": str(path), "error": str(exc)})
        return []
    return [c.not_valid_after_utc.timestamp() for c in certificates]
