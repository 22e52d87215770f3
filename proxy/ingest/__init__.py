"""Sessions from sources other than the proxy's own OCPP capture, into the same `sessions` table.

A partner supplies sessions of its chargers as OCPI CDRs (`proxy.api.ocpi`), pushed through the
partner API (`POST /v1/sessions/batch`) or as CSV files (`ere-proxy import sessions`, `POST
/v1/sessions/imports`). Every one is an `ExternalSession` (`records`: the record and its
validation), weighed for meter evidence (`evidence`), checked against the others of its batch
(`batch_checks`), deduplicated against the same charging event from another source (`dedup`)
and stored idempotently (`store.record_sessions`). CSV files: `csv_formats` (the column layouts
of evcc's export, a CPMS's CDR export and a generic one), `csv_import` (a whole file: every row
checked, each bad one reported with its line), `cells` (how a file's cells show in a report)
and `progress` (the progress line of a long import).
"""
