"""The ERE from the shell: the domain records operators keep and the accounting they drive.

* `validation`: what an operator types, checked field by field (`New*` rows, `normalise_*`,
  `parse_*`); pure;
* `records`: partners, customers, mandates and charger links in the database (add, list, get);
* `records_cli`: `ere-proxy partners|customers|mandates|links`, the parsers and the commands;
* `accounting_cli`: `ere-proxy quarter|payout|rev|jobs`, the parsers and the commands that queue
  and inspect the jobs of `proxy.ere.jobs`.

`proxy.cli.main` imports the two `*_cli` modules only for these commands, so the proxy role's
processes never load the accounting.
"""
