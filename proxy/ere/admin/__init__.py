"""The ERE from the shell: the domain records operators keep and the accounting they drive.

* `validation`: what an operator types, checked field by field (`normalise_*`, `parse_*`), and
  `new_records`: the `New*` rows built from it; pure;
* `changes`: checked inputs for changes to recorded data (link end and move, mandate revocation,
  referral) and their evidence (actor, reason, document hash);
* `records`: partners, customers and mandates in the database (add, list, get, revoke);
  `link_periods`: charger links as periods; `referrals`: referral codes; `closed_quarters`: no
  change takes effect inside a closed quarter; `customer_details`: a customer's details changed
  with their history; `customer_end`: ending a customer by revoking their mandates;
* `records_cli`: `ere-proxy partners|customers|mandates|links|referrals`, the parsers and the
  commands; `records_output`: how they print;
* `accounting_cli`: `ere-proxy quarter|payout|rev|jobs`, the parsers and the commands that queue
  and inspect the jobs of `proxy.ere.jobs`.

`proxy.cli.main` imports the two `*_cli` modules only for these commands, so the proxy role's
processes never load the accounting.
"""
