"""Proxies the project is measured against (started by the bench, one fresh process per run)."""
