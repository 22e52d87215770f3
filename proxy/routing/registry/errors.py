"""What registry operations refuse with; a message names the charger, never a secret."""

from __future__ import annotations


class RegistryError(Exception):
    """A registry operation that cannot be done; the message names the charger, never a secret."""


class InvalidIdentity(RegistryError, ValueError):
    pass


class ChargerExists(RegistryError):
    pass


class ChargerNotFound(RegistryError):
    pass


class NotManaged(RegistryError):
    pass


class SecretKeyError(RegistryError):
    """The secret key is missing, malformed, or not the one that sealed a value."""
