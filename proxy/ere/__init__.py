"""ERE accounting: from captured charging sessions to quarterly statements.

* `core`: the pure rules and maths (rounding, quarters, EAN, factors, fees, eligibility, the
  quarterly close); see `proxy.ere.core`.
* `jobs`: the job queue, the worker role, closing and payouts; see `proxy.ere.jobs`.

Outputs built on the core:

* `sepa`: the payout plan (minimum, carry-overs, payout models) and the pain.001 transfer file;
* `statement_mail`: the partner-branded payout statement (text and HTML) and its delivery;
* `rev`: the annual REV booking export (CSV, XML in our own schema) and the audit pack per EAN.
"""
