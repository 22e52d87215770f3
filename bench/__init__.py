"""Benchmarks of the OCPP-J proxy: load generator, fake CSMS, peer proxies and scenarios.

Run `python -m bench --help`; bench/README.md explains the scenarios and how to read the tables.
"""
