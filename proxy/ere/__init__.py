"""ERE accounting: from captured charging sessions to quarterly statements.

* `core`: the pure rules and maths (rounding, quarters, EAN, factors, fees, eligibility, the
  quarterly close); see `proxy.ere.core`.

Outputs built on them:

* `sepa`: the payout plan (minimum, carry-overs, payout models) and the pain.001 transfer file;
* `statement_mail`: the partner-branded payout statement (text and HTML) and its delivery;
* `rev`: the annual REV booking export (CSV, XML in our own schema) and the audit pack per EAN;
* `files`: writing those files whole or not at all.

Storage, payouts and exports build on these functions in modules of their own.
"""
