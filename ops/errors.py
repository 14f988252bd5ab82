"""Error reporting to Sentry (or any server speaking its protocol), switched on by SENTRY_DSN.

Called from the settings, so it is set up before Django loads the apps (Sentry's Django, Celery
and logging integrations turn themselves on). Nothing is sent without a DSN: the SDK is not even
imported then.

What leaves the process is what the logs may hold, no more: every event is passed through the
log redaction (``ops.logs.redact``: secret-bearing keys and headers, Bearer/Basic credentials,
passwords in URLs), and the SDK is told to send no personal data, no request bodies (webhook
bodies name payers) and no local variables (a frame's locals may hold a decrypted secret). Each
event is tagged with the request id, so a report leads to the request's log lines.
"""

from __future__ import annotations

from typing import Any

from ops.context import current_request_id
from ops.logs import redact


def event_scrub(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """``before_send``: redact the event and tag it with the current request id."""
    request_id = current_request_id()
    if request_id:
        event.setdefault("tags", {})["request_id"] = request_id
    return redact(event)


def error_reporting_init(*, dsn: str, environment: str, release: str | None, traces_sample_rate: float) -> None:
    import sentry_sdk

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=traces_sample_rate,
        before_send=event_scrub,
        before_send_transaction=event_scrub,
    )
