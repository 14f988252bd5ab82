"""The two kinds of failure background work can meet.

Transient: the outside service may answer next time (timeout, connection refused, 5xx, 429);
the task retries with backoff. Permanent: retrying cannot help; the failure is recorded for staff.
"""


class TransientError(Exception):
    """Worth retrying later."""


class PermanentError(Exception):
    """Retrying will not help; record it and tell staff."""
