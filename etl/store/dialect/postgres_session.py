"""How a PostgreSQL session of follow-etl is set up: its timeouts, and what counts as a
disconnect."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

# Set on every PostgreSQL session, so that no host that vanishes can block its peers for long:
# - lock_timeout: a statement waits at most this long for a row lock another session holds;
# - idle_in_transaction_session_timeout: the server ends a session whose transaction sits
#   idle this long (follow-etl never waits inside a transaction: a batch is all statements);
# - tcp_keepalives_*: the server probes an idle client socket after 10 s, every 5 s, and drops
#   it after 3 unanswered probes; keepalives* and tcp_user_timeout do the same from our side.
# - jit off: batch statements on big tables cross the JIT cost threshold and then spend more
#   time compiling than executing (seen: 500 ms on a 200 ms insert).
PG_SESSION = {
    "jit": "off",
    "lock_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}
PG_CONNECT = {
    "connect_timeout": 10,
    "application_name": "follow-etl",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms: unacknowledged data this long means the server is gone
    "options": " ".join(f"-c {name}={value}" for name, value in PG_SESSION.items()),
}


READ_ONLY_TRANSACTION = "25006"  # SQLSTATE: a standby, or a failover in progress


def read_only_is_a_disconnect(context: sa.engine.ExceptionContext) -> None:
    """A session on a read-only server (25006: a standby, or a failover in progress) stays
    read-only: SQLAlchemy is told it is a disconnect, so the pool drops its connections and the
    retry reconnects, reaching the new primary once there is one."""
    orig = context.original_exception
    if isinstance(orig, psycopg.Error) and orig.sqlstate == READ_ONLY_TRANSACTION:
        context.is_disconnect = True
