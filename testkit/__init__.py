"""What the tests and the benchmarks share: peers, processes, databases, and reference implementations.

It imports neither `tests` nor `bench`, and the proxy itself never imports it.
"""
