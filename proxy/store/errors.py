"""The errors the store raises; every one says what failed and what to do about it."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's own errors."""


class EmbeddedPostgresError(StoreError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


class DatabaseUnavailable(StoreError):
    """No connection to the configured database could be made in time."""


class MigrationError(StoreError):
    """The schema cannot be brought up to date (bad file, failed statement, newer database)."""
