"""Sealing upstream secrets: AES-256-GCM under keys that live only in the environment.

Each secret is sealed with the identity of its charger as associated data, so a sealed value
cannot be moved to another row, and each row records the id of the key that sealed it. The
environment variable named by `[registry] secret_key_env` may hold several comma-separated keys:
the first seals, all open, so keys rotate by prepending a new key, running `ere-proxy chargers
reseal`, then dropping the old one. The same keys derive the key of the credential verifiers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.routing.registry.errors import SecretKeyError

_NONCE_BYTES = 12


def generate_key() -> str:
    """A new secret key, in the form the key environment variable takes."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def key_id(key: bytes) -> str:
    """A short, non-secret name of a key, stored next to what it sealed."""
    return hashlib.sha256(b"ere-proxy secret key id\0" + key).hexdigest()[:16]


class KeyRing:
    """The keys that seal and open upstream secrets; the first one seals."""

    def __init__(self, keys: Sequence[bytes], source: str = "the secret key") -> None:
        if not keys:
            raise SecretKeyError(f"{source} holds no key")
        self.source = source
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}
        self.primary_id = key_id(keys[0])
        self._keys = list(keys)

    def derive(self, purpose: bytes) -> dict[str, bytes]:
        """A 32-byte sub-key per key for `purpose` (HKDF-SHA256), by the key's id, primary first."""
        return {
            key_id(key): HKDF(hashes.SHA256(), 32, None, purpose).derive(key) for key in self._keys
        }

    @classmethod
    def parse(cls, text: str, source: str = "the secret key") -> KeyRing:
        """Keys from comma-separated base64 (standard or URL-safe) of 32 bytes each."""
        keys = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            try:
                key = base64.b64decode(part.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != 32:
                raise SecretKeyError(
                    f"{source} must be base64 of 32 random bytes (see `ere-proxy chargers generate-key`)"
                )
            keys.append(key)
        return cls(keys, source)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> KeyRing | None:
        """The keys in environment variable `name`, or None when it is unset or empty."""
        text = (os.environ if environ is None else environ).get(name, "")
        return cls.parse(text, f"environment variable {name}") if text.strip() else None

    def seal(self, identity: str, secret: str) -> tuple[bytes, str]:
        """(nonce + ciphertext, key id) of `secret`, bound to `identity`."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.primary_id].encrypt(nonce, secret.encode(), identity.encode())
        return nonce + sealed, self.primary_id

    def open(self, identity: str, sealed: bytes, sealed_with: str) -> str:
        cipher = self._ciphers.get(sealed_with)
        if cipher is None:
            raise SecretKeyError(
                f"the upstream secret of {identity!r} was sealed with key {sealed_with}, "
                f"which {self.source} does not hold"
            )
        try:
            plain = cipher.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], identity.encode())
        except InvalidTag:
            raise SecretKeyError(
                f"the upstream secret of {identity!r} does not open with key {sealed_with}"
            ) from None
        return plain.decode()
