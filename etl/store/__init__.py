"""Everything that takes a connection. Functions never commit: the writer's batch transaction
and the coordinator's claim transactions (etl.crawl) hold them.

- schema, types: the tables (migrations/ is the authority) and the per-backend column types;
- db: engines (made by the dialect), retries on a lost connection, migrations;
- dialect/: one object per backend (Postgres, Sqlite) for every statement the two spell
  differently, chosen once per backend (``dialect_of``);
- runs, leases, cursors, workers: a run and its counters; a list's lease; a list's cursor
  (saved with its rows, in the batch transaction); the processes on a job;
- load: a batch's rows, through staging into edges, profiles and quarantine; seen: every
  statement on sync_seen;
- status, retention, chunks, joblock: `status`, `prune` and its chunked deletes, the SQLite
  job lock.
"""
