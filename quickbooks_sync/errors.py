"""The few ways a call to QuickBooks can end, and what each means for a sync.

- ``QboThrottled``: over a per-company limit (our limiter said wait, or Intuit answered 429).
  Nothing was created; the company pauses and the work is retried later, no attempt spent.
- ``QboAuthError``: Intuit refused the access token (HTTP 401). A token refresh may fix it.
- ``QboAuthLost``: the authorization is gone (refresh refused, revoked, disconnected): the
  school's sync pauses until staff reconnect; no attempt spent.
- ``QboUnavailable``: network error, timeout, 5xx. ``outcome_unknown`` says whether a create
  may have landed; if so, the next attempt first looks it up.
- ``QboFault``: Intuit processed the request and refused it (a validation or business fault):
  permanent, shown to staff with Intuit's own message.
- ``QboDuplicateRequest``: fault 600, the ``requestid`` was seen before: the first attempt landed.
"""

from __future__ import annotations

from core.errors import PermanentError, TransientError


class QboError(Exception):
    def __init__(self, message: str, *, intuit_tid: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.intuit_tid = intuit_tid


class QboNotConfigured(QboError, PermanentError):
    """QBO_CLIENT_ID / QBO_CLIENT_SECRET are not set, or the connection is incomplete."""


class QboThrottled(QboError, TransientError):
    def __init__(self, message: str, *, retry_after: float, sent: bool, intuit_tid: str = "") -> None:
        super().__init__(message, intuit_tid=intuit_tid)
        self.retry_after = retry_after
        self.sent = sent


class QboAuthError(QboError):
    pass


class QboAuthLost(QboError):
    pass


class QboUnavailable(QboError, TransientError):
    def __init__(self, message: str, *, outcome_unknown: bool, intuit_tid: str = "") -> None:
        super().__init__(message, intuit_tid=intuit_tid)
        self.outcome_unknown = outcome_unknown


class QboFault(QboError, PermanentError):
    def __init__(self, message: str, *, code: str = "", detail: str = "", intuit_tid: str = "") -> None:
        super().__init__(message, intuit_tid=intuit_tid)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        text = self.message
        if self.detail and self.detail not in text:
            text = f"{text}: {self.detail}"
        return f"{text} (QuickBooks error {self.code})" if self.code else text


class QboDuplicateRequest(QboFault):
    pass
