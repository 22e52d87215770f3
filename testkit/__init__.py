"""What the tests and the benchmarks share: peers, processes, databases, and reference implementations.

Never imported by the proxy itself.
"""
