"""Database connections of the request paths that run outside Django's request cycle (the gateway's threads and
its usage writer, the API key's check from the event loop)."""

from __future__ import annotations

from django.db import close_old_connections, connection


def connection_checked() -> None:
    """Django's ``close_old_connections`` before a thread's queries (a broken connection, one past CONN_MAX_AGE),
    except that a SQLite connection is kept: its CONN_MAX_AGE is 0 (console/settings.py), which would open a new
    one at every call, 1.2 ms with its PRAGMAs (twice the queries of a pool call); a SQLite connection outside a
    transaction holds nothing between calls and is never unusable."""
    if connection.vendor == "sqlite" and connection.connection is not None and not connection.in_atomic_block:
        return
    close_old_connections()
