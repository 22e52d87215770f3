"""The partner dashboard: server-rendered pages for a partner's people, in the api role.

Served by the partner API's application on the same port under `/dashboard` (left out of the
OpenAPI document). Partner users (`users`, managed with `ere-proxy partners users`) log in with
a password (`login_pages`, `login_sessions`, `address_lockout`); every page acts through the
same partner-scoped data classes as the API (`auth.Member`, `roles`), renders a Jinja2 template
(`rendering`, `layout`) and refreshes its live parts with a small static script (`static/live.js`).
`site.install_dashboard` adds it all to the application.
"""
