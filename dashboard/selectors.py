"""What the staff dashboard counts: today's takings and the work queues of every app. It sits on
top of payments, webhooks and the books, so that none of them needs to know the others' queues."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import Count, Q, Sum

from core.status import PaymentStatus
from core.timezones import day_bounds, local_today
from events.models import EndpointDelivery, WebhookEndpoint
from payments.models import MappingStatus, Payment, RefundRequest, TransactionFact, WebhookEvent
from payments.selectors import schools_for_user
from quickbooks_sync.selectors import PAYMENT_SYNC_STATES


@dataclass(frozen=True)
class SchoolDay:
    """A school's "today": its own date, from its own midnight to the next, in its zone."""

    school_id: int
    school_code: str
    time_zone: str
    day: date
    start: datetime
    end: datetime


@dataclass(frozen=True)
class ProviderTotal:
    school_id: int
    provider: str
    currency: str
    count: int
    amount_minor: int


@dataclass(frozen=True)
class StaffDashboard:
    days: dict[int, SchoolDay]  # by school id
    totals: list[ProviderTotal]
    unmatched: int
    directory_failed: int
    awaiting_review: int
    sync_waiting: int
    sync_failed: int
    dead_letters: int
    failed_events: int
    conflicts: int
    status_unknown: int
    disputed: int
    waiting_facts: int
    refunds_in_doubt: int = 0
    failed_deliveries: int = 0
    disabled_endpoints: tuple[WebhookEndpoint, ...] = ()
    high_risk: int = 0
    risk_held: int = 0


def school_days(*, user, now: datetime) -> dict[int, SchoolDay]:
    """Today for each of the user's schools, in the school's own time zone."""
    days = {}
    for school_id, code, zone in schools_for_user(user=user).values_list("pk", "code", "time_zone"):
        today = local_today(zone, now)
        start, end = day_bounds(today, zone)
        days[school_id] = SchoolDay(school_id, code, zone, today, start, end)
    return days


def staff_dashboard(*, user, now: datetime) -> StaffDashboard:
    """What needs a bursar's eye, over the user's schools: today's takings by school, provider
    and currency (payments whose money arrived during the school's own day, whatever happened
    to it since), and the work queues. Every number is the count of a filtered admin list (the
    same filters), so a click shows exactly those rows."""
    days = school_days(user=user, now=now)
    payments = Payment.objects.filter(school__in=schools_for_user(user=user)).order_by()
    # One condition per zone, not per school: a superuser's hundreds of schools share a few zones.
    by_zone: dict[tuple[datetime, datetime], list[int]] = defaultdict(list)
    for day in days.values():
        by_zone[(day.start, day.end)].append(day.school_id)
    today = Q(pk__in=[])
    for (start, end), school_ids in by_zone.items():
        today |= Q(school_id__in=school_ids, settled_at__gte=start, settled_at__lt=end)
    takings = (
        payments.filter(today)
        .values("school_id", "provider", "currency")
        .annotate(count=Count("pk"), amount_minor=Sum("amount_minor"))
        .order_by("school_id", "provider", "currency")
    )
    counts = payments.aggregate(
        unmatched=Count("pk", filter=Q(mapping_status=MappingStatus.UNMATCHED)),
        directory_failed=Count("pk", filter=Q(mapping_status=MappingStatus.FAILED)),
        awaiting_review=Count("pk", filter=Q(status=PaymentStatus.AWAITING_REVIEW)),
        sync_waiting=Count("pk", filter=PAYMENT_SYNC_STATES["waiting"][1]),
        sync_failed=Count("pk", filter=PAYMENT_SYNC_STATES["failed"][1]),
        conflicts=Count("pk", filter=~Q(ledger_conflict="")),
        status_unknown=Count("pk", filter=Q(review_flag="status_unknown")),
        disputed=Count("pk", filter=Q(status=PaymentStatus.DISPUTED)),
        # Flagged by payments.risk and not yet cleared by a staff member.
        high_risk=Count("pk", filter=Q(risk_flagged=True, risk_cleared_at__isnull=True)),
        risk_held=Count("pk", filter=Q(risk_held=True)),
    )
    events = WebhookEvent.objects.filter(account__school__in=schools_for_user(user=user)).order_by()
    event_counts = events.aggregate(
        dead_letters=Count("pk", filter=Q(status=WebhookEvent.Status.REJECTED)),
        failed_events=Count("pk", filter=Q(status=WebhookEvent.Status.FAILED)),
    )
    return StaffDashboard(
        days=days,
        totals=[ProviderTotal(**row) for row in takings],
        **counts,
        **event_counts,
        waiting_facts=TransactionFact.objects.filter(school__in=schools_for_user(user=user), payment__isnull=True).count(),
        refunds_in_doubt=RefundRequest.objects.filter(
            school__in=schools_for_user(user=user), status=RefundRequest.Status.IN_DOUBT
        ).count(),
        failed_deliveries=EndpointDelivery.objects.filter(
            endpoint__school__in=schools_for_user(user=user), status=EndpointDelivery.Status.FAILED
        ).count(),
        # Disabled by the service after days of failures (or by staff): the school's system
        # hears nothing until someone enables it again.
        disabled_endpoints=tuple(
            WebhookEndpoint.objects.filter(school__in=schools_for_user(user=user), is_active=False)
            .select_related("school")
            .order_by("-disabled_at")[:20]
        ),
    )
