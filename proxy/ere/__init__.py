"""ERE accounting: from captured charging sessions to quarterly statements.

* `core`: the pure rules and maths (rounding, quarters, EAN, factors, fees, eligibility, the
  quarterly close, the payout plan and its pain.001 document, the payout statement, the REV
  booking export); see `proxy.ere.core`.
* `jobs`: the job queue, the worker role, closing, payouts, statement delivery and the REV
  export; see `proxy.ere.jobs`.
* `admin`: the shell side: input validation, the domain records in the database, and the
  `partners|customers|mandates|links` and `quarter|payout|rev|jobs` commands; see
  `proxy.ere.admin`.
"""
