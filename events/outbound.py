"""Signed outbound webhooks to the schools' own systems (Standard Webhooks).

Staff register an endpoint (``endpoint_create``: the secret is returned once and never shown
again), rotate its secret (``endpoint_secret_rotate``: the old one keeps signing beside the new
one for ``OUTBOUND_WEBHOOK_SECRET_OVERLAP_HOURS``), and replay a delivery (``delivery_replay``).
The relay's endpoint sink makes one ``EndpointDelivery`` per event and endpoint; Celery sends it
(``delivery_send``) and retries on the specification's schedule
(``OUTBOUND_WEBHOOK_RETRY_SCHEDULE_SECONDS``: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h). Every
attempt is logged with the answer. An endpoint that has failed every delivery for
``OUTBOUND_WEBHOOK_DISABLE_AFTER_DAYS`` is disabled, audited, and shown on the dashboard.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from config.celery import enqueue_on_commit, publish, tasks_run_inline
from events import signing
from events.models import DeliveryAttempt, EndpointDelivery, WebhookEndpoint
from payments.audit import audit_record
from payments.models import AuditLog, School

logger = logging.getLogger(__name__)

SEND_TASK = "events.tasks.endpoint_delivery_send"
# What is kept of an answer's body in the delivery log.
RESPONSE_KEEP_CHARS = 1000


class DestinationRefused(Exception):
    """An endpoint URL this service will not call (not https, or an internal address)."""


def destination_check(url: str) -> None:
    """Refuse what would turn outbound webhooks into a way into our own network: plain http and
    addresses that are private, loopback or link-local (each allowed by a setting, for
    development and tests). Checked when staff save an endpoint and before every attempt."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise DestinationRefused("The URL must be an absolute https:// address.")
    if parts.scheme == "http" and not settings.OUTBOUND_WEBHOOK_ALLOW_HTTP:
        raise DestinationRefused("The URL must use https://.")
    if settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise DestinationRefused(f"The host {parts.hostname} cannot be resolved.") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise DestinationRefused(f"The host {parts.hostname} resolves to an internal address ({address}).")


# --- Endpoints (staff) -----------------------------------------------------------------------------


def endpoint_create(
    *, school: School, url: str, description: str = "", event_types: list[str] | None = None, actor=None
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret: the caller shows the secret once; it is stored encrypted
    and never displayed again."""
    destination_check(url)
    secret = signing.secret_new()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            school=school,
            url=url,
            description=description,
            event_types=list(event_types or []),
            secret=secret,
            created_by=actor,
        )
        _audit(endpoint, "webhook_endpoint.created", actor, {"url": url, "event_types": endpoint.event_types})
    return endpoint, secret


def endpoint_secret_rotate(*, endpoint_id: int, actor=None) -> str:
    """A new secret (returned once). The old one goes on signing beside it for the overlap, so
    the school's system can switch to the new one without refusing a delivery."""
    secret = signing.secret_new()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update(no_key=True).get(pk=endpoint_id)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = timezone.now() + timedelta(
            hours=settings.OUTBOUND_WEBHOOK_SECRET_OVERLAP_HOURS
        )
        endpoint.secret = secret
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
        _audit(endpoint, "webhook_endpoint.secret_rotated", actor, {"previous_valid_until": endpoint.previous_secret_expires_at.isoformat()})
    return secret


def endpoint_enable(*, endpoint_id: int, actor=None) -> None:
    """Staff switch a disabled endpoint back on; its failure clock starts again."""
    with transaction.atomic():
        updated = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=False).update(
            is_active=True, disabled_at=None, disabled_reason="", failing_since=None
        )
        if updated:
            _audit(WebhookEndpoint.objects.get(pk=endpoint_id), "webhook_endpoint.enabled", actor, {})


def endpoint_secrets(endpoint: WebhookEndpoint, now=None) -> list[str]:
    now = now or timezone.now()
    secrets_ = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        secrets_.append(endpoint.previous_secret)
    return secrets_


def _audit(endpoint: WebhookEndpoint, action: str, actor, details: dict) -> None:
    audit_record(
        action=action,
        actor_type=AuditLog.ActorType.STAFF if actor is not None else AuditLog.ActorType.SYSTEM,
        actor=actor.get_username() if actor is not None else "",
        school_id=endpoint.school_id,
        target=endpoint,
        details=details,
    )


# --- Deliveries (Celery) ---------------------------------------------------------------------------


def delivery_claim(*, delivery_id: int, replay: bool = False) -> EndpointDelivery | None:
    """Claim a due delivery with one conditional update (None: done, not due, or another worker
    holds a fresh claim). A replay claims whatever its state."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.OUTBOUND_WEBHOOK_TIMEOUT_SECONDS * 4)
    claimable = Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale)
    if not replay:
        claimable &= Q(status=EndpointDelivery.Status.PENDING) & (
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        )
    claimed = EndpointDelivery.objects.filter(claimable, pk=delivery_id).update(claimed_at=now, attempts=F("attempts") + 1)
    if not claimed:
        return None
    return EndpointDelivery.objects.select_related("endpoint").get(pk=delivery_id)


def delivery_send(*, delivery_id: int, replay: bool = False) -> str:
    """One attempt: POST the signed body, log the answer, then succeed, schedule the next try,
    or give up; an endpoint failing for too long is disabled. Returns what happened."""
    delivery = delivery_claim(delivery_id=delivery_id, replay=replay)
    if delivery is None:
        return "not due"
    endpoint = delivery.endpoint
    if not endpoint.is_active and not replay:
        EndpointDelivery.objects.filter(pk=delivery.pk).update(status=EndpointDelivery.Status.CANCELLED, claimed_at=None)
        return "cancelled"
    status_code, answer, error, elapsed_ms = _post(endpoint, delivery)
    now = timezone.now()
    DeliveryAttempt.objects.create(
        delivery=delivery, attempted_at=now, replay=replay, status_code=status_code,
        response_body=answer, error=error, duration_ms=elapsed_ms,
    )  # fmt: skip
    if status_code is not None and 200 <= status_code < 300:
        EndpointDelivery.objects.filter(pk=delivery.pk).update(
            status=EndpointDelivery.Status.SUCCEEDED, delivered_at=now, last_status_code=status_code,
            last_error="", next_attempt_at=None, claimed_at=None,
        )  # fmt: skip
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=False).update(failing_since=None)
        return "delivered"
    what = error or f"HTTP {status_code}"
    schedule = settings.OUTBOUND_WEBHOOK_RETRY_SCHEDULE_SECONDS
    # A replay is one more try by hand: it does not move the schedule of a pending delivery.
    retries_used = delivery.attempts - 1 - delivery.attempt_log.filter(replay=True).count()
    if replay and delivery.status != EndpointDelivery.Status.PENDING:
        outcome, fields = "replay failed", {}
    elif retries_used < len(schedule):
        wait = schedule[retries_used]
        fields = {"status": EndpointDelivery.Status.PENDING, "next_attempt_at": now + timedelta(seconds=wait)}
        outcome = f"retry in {wait}s"
        if not tasks_run_inline():
            transaction.on_commit(lambda: publish(SEND_TASK, (delivery.pk,), countdown=wait))
    else:
        fields = {"status": EndpointDelivery.Status.FAILED, "next_attempt_at": None}
        outcome = "failed"
    EndpointDelivery.objects.filter(pk=delivery.pk).update(
        last_status_code=status_code, last_error=what[:2000], claimed_at=None, **fields
    )
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
    endpoint_disable_if_failing(endpoint_id=endpoint.pk)
    return outcome


def _post(endpoint: WebhookEndpoint, delivery: EndpointDelivery) -> tuple[int | None, str, str, int]:
    body = delivery.body.encode()
    headers = {
        "content-type": "application/json",
        "user-agent": "school-payments-webhooks/1",
        **signing.signed_headers(
            endpoint_secrets(endpoint), msg_id=str(delivery.event_id), timestamp=int(time.time()), body=body
        ),
    }
    timeout = settings.OUTBOUND_WEBHOOK_TIMEOUT_SECONDS
    started = time.monotonic()
    try:
        destination_check(endpoint.url)
        # No redirects: a 3xx is an answer (a failure), not an invitation to post elsewhere. The
        # answer is read only as far as the log keeps it, and within the timeout overall (a
        # receiver that drips bytes does not hold a worker).
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            with client.stream("POST", endpoint.url, content=body, headers=headers) as response:
                answer = b""
                for part in response.iter_bytes():
                    answer += part
                    if len(answer) >= RESPONSE_KEEP_CHARS * 4 or time.monotonic() - started > timeout:
                        break
    except DestinationRefused as exc:
        return None, "", _storable(f"refused: {exc}"), 0
    except httpx.HTTPError as exc:
        return None, "", _storable(f"{type(exc).__name__}: {exc}"), int((time.monotonic() - started) * 1000)
    elapsed = int((time.monotonic() - started) * 1000)
    return response.status_code, _storable(answer.decode("utf-8", errors="replace"))[:RESPONSE_KEEP_CHARS], "", elapsed


def _storable(text: str) -> str:
    # PostgreSQL text refuses NUL, and an answer may hold anything.
    return text.replace("\x00", "\ufffd")[:2000]


def endpoint_disable_if_failing(*, endpoint_id: int) -> bool:
    """Disable an endpoint whose every delivery has failed for the configured days: its pending
    deliveries are cancelled, the audit log says why, and the dashboard lists it for staff."""
    days = settings.OUTBOUND_WEBHOOK_DISABLE_AFTER_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    with transaction.atomic():
        disabled = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=True, failing_since__lte=cutoff).update(
            is_active=False, disabled_at=timezone.now(), disabled_reason=f"Every delivery failed for {days} days."
        )
        if not disabled:
            return False
        endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
        cancelled = EndpointDelivery.objects.filter(endpoint=endpoint, status=EndpointDelivery.Status.PENDING).update(
            status=EndpointDelivery.Status.CANCELLED, next_attempt_at=None
        )
        _audit(endpoint, "webhook_endpoint.disabled", None, {"reason": endpoint.disabled_reason, "cancelled": cancelled})
    logger.warning("webhook endpoint %s of school %s disabled after %d days of failures", endpoint_id, endpoint.school_id, days)
    return True


def delivery_replay(*, delivery_id: int, actor) -> str:
    """Staff send a delivery again now, whatever its state: the same body and webhook-id (the
    receiver de-duplicates), freshly signed. Audited; the attempt is logged as a replay."""
    delivery = EndpointDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    audit_record(
        action="webhook_delivery.replayed",
        actor_type=AuditLog.ActorType.STAFF,
        actor=actor.get_username(),
        school_id=delivery.endpoint.school_id,
        target=delivery,
        details={"event_id": str(delivery.event_id), "previous_status": delivery.status},
    )
    return delivery_send(delivery_id=delivery_id, replay=True)


def deliveries_sweep(*, limit: int = 1000) -> list[int]:
    """Enqueue due deliveries whose message was lost (broker down, worker died mid-claim)."""
    now = timezone.now()
    grace = now - timedelta(seconds=settings.WEBHOOK_SWEEP_AFTER_SECONDS)
    stale = now - timedelta(seconds=settings.OUTBOUND_WEBHOOK_TIMEOUT_SECONDS * 4)
    due = list(
        EndpointDelivery.objects.filter(
            Q(next_attempt_at__isnull=True, created_at__lt=grace) | Q(next_attempt_at__lt=grace),
            Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale),
            status=EndpointDelivery.Status.PENDING,
        ).values_list("pk", flat=True)[:limit]
    )
    for delivery_id in due:
        enqueue_on_commit(SEND_TASK, delivery_id)
    return due
