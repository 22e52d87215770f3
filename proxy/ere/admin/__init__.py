"""The ERE from the shell: the domain records operators keep and the accounting they drive.

* `validation`: for now all of `ere-proxy partners|customers|mandates|links` (checks, SQL, commands);
* `accounting_cli`: `ere-proxy quarter|payout|rev|jobs`, the parsers and the commands that queue
  and inspect the jobs of `proxy.ere.jobs`.
"""
