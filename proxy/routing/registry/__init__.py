"""The charger registry in the database: records, sealed upstream secrets, and a router over them.

A charger row says where its link goes (`upstream`), how the charger authenticates (`passthrough`
or `managed` with a scrypt `password_hash`) and, for managed chargers, which credential the proxy
presents upstream (`records`). Upstream secrets are sealed with AES-256-GCM under a key that lives
only in the environment (`sealing`). `DatabaseRouter` answers lookups from a snapshot kept fresh
(`router`). `ere-proxy chargers ...` is in `proxy.cli.chargers`.
"""
