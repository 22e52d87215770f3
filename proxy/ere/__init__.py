"""ERE accounting: from captured charging sessions to quarterly statements.

* `core`: the pure rules and maths (rounding, quarters, EAN, factors, fees, eligibility, the
  quarterly close, the payout plan and its pain.001 document, the payout statement); see
  `proxy.ere.core`.
* `jobs`: the job queue, the worker role, closing, payouts and statement delivery; see
  `proxy.ere.jobs`.

Outputs built on the core:

* `rev`: the annual REV booking export (CSV, XML in our own schema) and the audit pack per EAN.
"""
