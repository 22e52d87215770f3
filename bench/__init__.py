"""Benchmarks of the OCPP-J proxy: scenarios (bench/scenarios/), what they measure with
(bench/harness/) and the load they offer (bench/load/).

Run `python -m bench` for the list; bench/README.md explains the scenarios and how to read the
tables.
"""
