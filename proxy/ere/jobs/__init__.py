"""The ERE work that runs against the database: the job queue, the worker role and its jobs.

* `queue`: the job queue in PostgreSQL (`ere_jobs`), one job per transaction, SKIP LOCKED;
* `worker`: the worker role (`ere-proxy worker`) that runs jobs until it is told to stop;
* `closing`: the `close` and `close-shard` jobs that turn sessions into frozen statement lines;
* `payouts`: the `payout` job (one pain.001 file per quarter) and the `statements` job;
* `statement_delivery`: sending the statements over SMTP, or writing them as `.eml` files;
* `rev_export`: the annual REV export, read from what closed quarters stated, written as files;
* `files`: writing output files whole or not at all.

The rules and figures come from `proxy.ere.core`; these modules read and write the database and
the files around them.
"""
