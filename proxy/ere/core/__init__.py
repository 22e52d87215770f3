"""The pure core of the ERE accounting: rules and maths, no I/O and no clock.

Each module holds one idea and takes its inputs as typed, immutable values:

* `rounding`: the one rounding rule per figure (ERE to 0.01, euros to the cent, half up);
* `quarters`: calendar quarters ("2026Q3") and their boundaries in Dutch local time;
* `ean`: the 18-digit connection code (EAN) and its GS1 check digit;
* `factors`: ERE conversion factors per delivery year and market prices per quarter, as data
  (`data/factors.toml`);
* `fees`: our fee plan (VAT included, with a floor) and the split of a gross amount;
* `eligibility`: whether one session earns ERE, with a reason, and how many kWh it counts;
* `statements`: the quarterly close, with adjustments for quarters already closed;
* `payout_plan`: who is paid this quarter (minimum, carry-overs, payout models);
* `sepa`: the pain.001 credit transfer document that pays them;
* `statement_mail`: the partner-branded payout statement (text, HTML, the e-mail message);
* `statement_texts`: its words and number formats, Dutch by default and English;
* `branding`: a partner's white label (look, sender, statement texts, remittance name);
* `rev_booking`: the annual REV booking export (CSV, XML in our own schema in `schemas/`) and
  the audit pack per EAN.

None of these reads a clock, a database or the network, or writes a file; the only files they
read ship with the code: the factor table and the XML schemas that documents are checked
against. Money, credits and energy are `decimal.Decimal` throughout; a float is refused with
`TypeError`. The jobs (`proxy.ere.jobs`) and the commands (`proxy.ere.admin`) build on these
functions.
"""
