"""`ere-proxy`: the command line, one module per command group."""
