"""ERE accounting: from captured charging sessions to quarterly statements.

The core modules each hold one idea and take their inputs as typed, immutable values:

* `rounding`: the one rounding rule per figure (ERE to 0.01, euros to the cent, half up);
* `quarters`: calendar quarters ("2026Q3") and their boundaries in Dutch local time;
* `ean`: the 18-digit connection code (EAN) and its GS1 check digit;
* `factors`: ERE conversion factors per delivery year and market prices per quarter, as data;
* `fees`: our fee plan (VAT included, with a floor) and the split of a gross amount;
* `eligibility`: whether one session earns ERE, with a reason, and how many kWh it counts;
* `statements`: the quarterly close, with adjustments for quarters already closed.

Outputs built on them:

* `sepa`: the payout plan (minimum, carry-overs, payout models) and the pain.001 transfer file;
* `statement_mail`: the partner-branded payout statement (text and HTML) and its delivery;
* `rev`: the annual REV booking export (CSV, XML in our own schema) and the audit pack per EAN;
* `files`: writing those files whole or not at all.

None of these reads a clock, a database or the network; the only file they read is the factor
table. Money, credits and energy are `decimal.Decimal` throughout; a float is refused with
`TypeError`. Storage, payouts and exports build on these functions in modules of their own.
"""
