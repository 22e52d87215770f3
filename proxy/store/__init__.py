"""PostgreSQL storage: the embedded server, the connection pool, and schema migrations.

`open_database` is the entry point; see `db.py`. Nothing in this package is awaited on the
forwarding path.
"""

from proxy.store.connection import Connection
from proxy.store.db import Database, open_database
from proxy.store.errors import (
    DatabaseUnavailable,
    EmbeddedPostgresError,
    MigrationError,
    StoreError,
)

__all__ = [
    "Connection",
    "Database",
    "DatabaseUnavailable",
    "EmbeddedPostgresError",
    "MigrationError",
    "StoreError",
    "open_database",
]
