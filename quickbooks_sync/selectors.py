"""Reads of the QuickBooks sync: readiness, backlog and health."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from payments.models import MappingStatus, Payment, School
from payments.selectors import schools_for_user
from payments.state import SETTLED_STATES
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboPaymentSync, SyncStatus


def payment_is_ready(payment: Payment) -> bool:
    """Ready to sync: the school has the money (succeeded, or refunded since) and the student
    is known."""
    return (
        payment.status in SETTLED_STATES
        and payment.mapping_status == MappingStatus.MAPPED
        and payment.student_id is not None
    )


def ready_unsynced_payments(*, school_id: int, since: datetime) -> QuerySet[Payment]:
    """Payments the sync should have a record for but has not (the backlog scan's safety net)."""
    return Payment.objects.filter(
        school_id=school_id,
        status__in=SETTLED_STATES,
        mapping_status=MappingStatus.MAPPED,
        student__isnull=False,
        created_at__gte=since,
        qbo_sync__isnull=True,
    ).order_by("created_at")


def books_behind_ledger(*, school_id: int) -> QuerySet[Payment]:
    """Payments with a first document whose documents do not add up to what the school holds
    now (a refund or chargeback no path asked the books about)."""
    adjustments = (
        QboAdjustmentSync.objects.filter(payment=OuterRef("pk"))
        .order_by()
        .values("payment")
        .annotate(
            total=Coalesce(Sum("amount_minor", filter=Q(direction="in")), 0)
            - Coalesce(Sum("amount_minor", filter=Q(direction="out")), 0)
        )
        .values("total")
    )
    return (
        Payment.objects.filter(school_id=school_id, qbo_sync__isnull=False, status__in=SETTLED_STATES)
        .annotate(
            booked=F("qbo_sync__amount_minor") + Coalesce(Subquery(adjustments), Value(0)),
            net=F("amount_minor") - F("refunded_amount_minor") - F("charged_back_amount_minor"),
        )
        .exclude(booked=F("net"))
        .order_by("created_at")
    )


def due_filter(now: datetime | None = None) -> Q:
    now = now or timezone.now()
    return (
        Q(status=SyncStatus.PENDING)
        & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
    )


def schools_with_due_work(now: datetime | None = None) -> set[int]:
    due = due_filter(now)
    schools = set(QboPaymentSync.objects.filter(due).values_list("school_id", flat=True).distinct())
    schools |= set(
        QboAdjustmentSync.objects.filter(due, payment__qbo_sync__status=SyncStatus.SYNCED)
        .values_list("school_id", flat=True)
        .distinct()
    )
    return schools


def next_due_at(*, school_id: int) -> datetime | None:
    """When the school's earliest scheduled retry falls due."""
    times = [
        model.objects.filter(school_id=school_id, status=SyncStatus.PENDING, next_attempt_at__isnull=False)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
        for model in (QboPaymentSync, QboAdjustmentSync)
    ]
    times = [moment for moment in times if moment is not None]
    return min(times) if times else None


def backlog_counts(*, school_id: int) -> dict[str, int]:
    counts = {status: 0 for status in SyncStatus.values}
    for model in (QboPaymentSync, QboAdjustmentSync):
        for row in model.objects.filter(school_id=school_id).values("status").annotate(n=Count("id")):
            counts[row["status"]] += row["n"]
    return counts


# ?sync=<value> of the payment list -> (label, which payments). The dashboard counts with these
# too, so its numbers are the lists' numbers.
PAYMENT_SYNC_STATES: dict[str, tuple[str, Q]] = {
    "synced": ("In QuickBooks", Q(qbo_sync__status=SyncStatus.SYNCED)),
    "waiting": ("Waiting to sync", Q(qbo_sync__status__in=(SyncStatus.PENDING, SyncStatus.PAUSED))),
    "failed": ("Sync failed", Q(qbo_sync__status=SyncStatus.FAILED)),
    "none": ("Not sent", Q(qbo_sync__isnull=True)),
}

# Not in QuickBooks yet: waiting its turn, paused (authorization gone), or failed (staff act).
BACKLOG_STATES = (SyncStatus.PENDING, SyncStatus.PAUSED, SyncStatus.FAILED)


def sync_backlog_counts(*, schools: QuerySet[School] | None = None) -> dict[str, int]:
    """Payments and refunds not yet in QuickBooks, by sync status, over ``schools`` (every
    school when None): the dashboard's and ``/metrics``' one definition of the sync backlog."""
    counts = {str(status): 0 for status in BACKLOG_STATES}
    for model in (QboPaymentSync, QboAdjustmentSync):
        records = model.objects.filter(status__in=BACKLOG_STATES)
        if schools is not None:
            records = records.filter(school__in=schools)
        for status, n in records.order_by().values_list("status").annotate(n=Count("id")):
            counts[status] += n
    return counts


def connection_health(*, connection: QboConnection) -> dict:
    """What the admin page shows about a connection."""
    from quickbooks_sync.coordination import coordinator

    now = timezone.now()
    health = {
        "status": connection.status,
        "status_display": connection.get_status_display(),
        "reason": connection.status_reason,
        "configured": connection.is_configured,
        "access_token_valid_for": (
            int((connection.access_token_expires_at - now).total_seconds())
            if connection.access_token_expires_at and connection.access_token_expires_at > now
            else 0
        ),
        "refresh_token_expires_at": connection.refresh_token_expires_at,
        "tokens_refreshed_at": connection.tokens_refreshed_at,
        "last_synced_at": connection.last_synced_at,
        "backlog": backlog_counts(school_id=connection.school_id),
        "last_failure": QboPaymentSync.objects.filter(school_id=connection.school_id, status=SyncStatus.FAILED)
        .order_by("-updated_at")
        .values("payment_id", "last_error", "updated_at")
        .first(),
        "limiter": None,
    }
    if connection.realm_id:
        try:
            health["limiter"] = coordinator().stats(connection.realm_id)
        except Exception:  # noqa: BLE001 - the page must render while Redis is down
            health["limiter"] = None
    return health


def connections_needing_attention(*, user) -> QuerySet[QboConnection]:
    """Connections of ``user``'s schools whose authorization is gone while payments wait: the
    admin banner."""
    return QboConnection.objects.select_related("school").filter(
        status=QboConnection.Status.NEEDS_RECONNECT, school__in=schools_for_user(user=user)
    )


def schools_for_overview(*, user) -> QuerySet[School]:
    return schools_for_user(user=user).filter(active=True).select_related("qbo_connection").order_by("code")
