"""Database metrics: every SQL statement of every connection is timed
(``config.metrics.DB_QUERY_DURATION``), failures counted by error class, and each new connection
counted. Installed on each connection when it opens (``connection_created``), through Django's
own hook for wrapping query execution; it adds a few microseconds to a query (a histogram
observation; in multiprocess mode a write to a memory-mapped file)."""

from __future__ import annotations

import time

from config.metrics import DB_CONNECTIONS_OPENED, DB_QUERY_DURATION, DB_QUERY_ERRORS

# alias -> its histogram child: looking a child up by its labels costs more than observing.
_durations: dict[str, object] = {}


def query_observed(execute, sql, params, many, context):
    """An ``execute_wrapper``: times the statement and counts it if it raises."""
    alias = context["connection"].alias
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    except Exception as exc:
        DB_QUERY_ERRORS.labels(alias, type(exc).__name__).inc()
        raise
    finally:
        duration = _durations.get(alias)
        if duration is None:
            duration = _durations[alias] = DB_QUERY_DURATION.labels(alias)
        duration.observe(time.perf_counter() - started)


def connection_opened(sender, connection, **kwargs) -> None:
    """``connection_created``: count it and wrap its queries (once: the wrapper list belongs to
    the connection object, which outlives reconnects). First in the list, not last: a
    connection opened inside ``connection.execute_wrapper(...)`` must leave that block's own
    wrapper last, where the block's exit pops it."""
    DB_CONNECTIONS_OPENED.labels(connection.alias).inc()
    if query_observed not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, query_observed)
