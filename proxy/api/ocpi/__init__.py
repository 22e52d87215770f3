"""OCPI 2.2.1, as the receiving party for a CPO's platform (role OTHER, or EMSP).

A partner's platform connects with a credentials token the operator gives it (token A,
`ere-proxy partners ocpi create`), registers (the credentials module; from then on only its
token C works) and pushes CDRs, which become sessions for ERE, and live sessions, which are
kept as received. Served under `/ocpi` by an application of its own (`proxy.api.ocpi.app`),
mounted in the partner API's and kept out of its OpenAPI document.

Sans-IO cores: `envelope` (the response format and status codes), `values` (OCPI's basic
types), `tokens` (credentials tokens and the Authorization header), `credentials` (the
registration's objects), `cdrs` (the CDR object), `cdr_sessions` (a CDR as the session
`proxy.ingest` stores), `live_sessions` (the Session object, PUT and PATCH), `pages`
(pagination). Shells: `platforms`, `cdr_store`, `live_session_store` (PostgreSQL),
`platform_client` (the registration's calls to the platform), `auth`, `responses`, the routes
(`version_routes`, `credential_routes`, `cdr_routes`, `session_routes`) and `app`. The operator's
command line: `proxy.ere.admin.ocpi_cli`.
"""
