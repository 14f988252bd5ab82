"""Reads of the QuickBooks sync: readiness, backlog and health."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection as db_connection
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from payments.models import MappingStatus, Payment, School
from payments.selectors import schools_for_user
from payments.state import SETTLED_STATES
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboPaymentSync, SyncStatus


def payment_is_ready(payment: Payment) -> bool:
    """Ready to sync: the school has the money (succeeded, or refunded since), the student is
    known, and it is not held for a staff member's look at its risk (``Payment.risk_held``)."""
    return (
        payment.status in SETTLED_STATES
        and payment.mapping_status == MappingStatus.MAPPED
        and payment.student_id is not None
        and not payment.risk_held
    )


def ready_unsynced_payments(*, school_id: int, since: datetime) -> QuerySet[Payment]:
    """Payments the sync should have a record for but has not (the backlog scan's safety net)."""
    return Payment.objects.filter(
        school_id=school_id,
        status__in=SETTLED_STATES,
        mapping_status=MappingStatus.MAPPED,
        student__isnull=False,
        risk_held=False,
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

# Where a bursar opens a document in QuickBooks Online (the company they are signed in to).
QBO_APP_URLS = {"sandbox": "https://app.sandbox.qbo.intuit.com/app/", "production": "https://app.qbo.intuit.com/app/"}
QBO_DOCUMENT_PAGES = {"Payment": "recvpayment", "RefundReceipt": "refundreceipt", "SalesReceipt": "salesreceipt"}


def qbo_document_url(*, txn_type: str, txn_id: str) -> str:
    """The QuickBooks Online page of a document, or "" for a type without one we know."""
    page = QBO_DOCUMENT_PAGES.get(txn_type)
    if not page or not txn_id:
        return ""
    return f"{QBO_APP_URLS[settings.QBO_ENVIRONMENT]}{page}?txnId={txn_id}"


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


# --- Reconciliation: the ledger against the books ---------------------------------------------------


@dataclass(frozen=True)
class PaymentDifference:
    payment_id: str
    status: str
    net_minor: int
    books_minor: int
    reason: str


@dataclass(frozen=True)
class SchoolReconciliation:
    school_code: str
    currency: str
    connected: bool
    payments: int
    ledger_net_minor: int  # what the school holds of its settled payments
    books_minor: int  # what their documents in QuickBooks add up to
    differences: list[PaymentDifference]  # the first ``differences_limit`` of them, when limited
    difference_count: int

    @property
    def difference_minor(self) -> int:
        return self.ledger_net_minor - self.books_minor


@dataclass(frozen=True)
class Reconciliation:
    schools: list[SchoolReconciliation]
    # Not settled after the janitor's last check, or flagged because the provider could not be asked.
    not_final: list[PaymentDifference]
    # Refunds and disputes that still wait for their payment.
    waiting_facts: int

    @property
    def differences(self) -> int:
        return sum(row.difference_count for row in self.schools) + len(self.not_final)


def _books_of_payments() -> dict:
    """Annotations: what a payment's synced documents add up to (money in less money out)."""
    first = QboPaymentSync.objects.filter(payment=OuterRef("pk"), status=SyncStatus.SYNCED).values("amount_minor")
    adjustments = (
        QboAdjustmentSync.objects.filter(payment=OuterRef("pk"), status=SyncStatus.SYNCED)
        .order_by()
        .values("payment")
        .annotate(
            total=Coalesce(Sum("amount_minor", filter=Q(direction="in")), 0)
            - Coalesce(Sum("amount_minor", filter=Q(direction="out")), 0)
        )
        .values("total")
    )
    return {
        "books": Coalesce(Subquery(first), Value(0)) + Coalesce(Subquery(adjustments), Value(0)),
        "net": F("amount_minor") - F("refunded_amount_minor") - F("charged_back_amount_minor"),
        "sync_failed": Exists(QboPaymentSync.objects.filter(payment=OuterRef("pk"), status=SyncStatus.FAILED))
        | Exists(QboAdjustmentSync.objects.filter(payment=OuterRef("pk"), status=SyncStatus.FAILED)),
    }


def _reconciliation_totals(*, school_ids: list[int], since: datetime | None, connected: dict) -> dict[tuple, dict]:
    """Per school and currency, in one pass over the settled payments with their synced documents
    joined: how many, the ledger's net, what the documents add up to, and how many payments differ
    (the rule of ``reconciliation``). Per-payment subqueries took seconds at a million payments;
    the joins take a fraction of that, and the same SQL runs on SQLite (``make run``)."""
    if not school_ids:
        return {}
    quote = db_connection.ops.quote_name
    created_at = Payment._meta.get_field("created_at")
    expected, expected_params = ["books <> 0"], []
    for school_id, qbo_connection in connected.items():
        expected.append("(school_id = %s AND created_at >= %s)")
        expected_params += [school_id, created_at.get_db_prep_value(qbo_connection.sync_since, db_connection)]
    since_clause, since_params = "", []
    if since is not None:
        since_clause = "AND p.settled_at >= %s"
        since_params = [created_at.get_db_prep_value(since, db_connection)]
    sql = f"""
        SELECT school_id, currency, COUNT(*), SUM(net), SUM(books),
               SUM(CASE WHEN books <> net AND ({" OR ".join(expected)}) THEN 1 ELSE 0 END)
        FROM (
            SELECT p.school_id AS school_id, p.currency AS currency, p.created_at AS created_at,
                   p.amount_minor - p.refunded_amount_minor - p.charged_back_amount_minor AS net,
                   COALESCE(s.amount_minor, 0) + COALESCE(a.total, 0) AS books
            FROM {quote(Payment._meta.db_table)} p
            LEFT JOIN {quote(QboPaymentSync._meta.db_table)} s ON s.payment_id = p.id AND s.status = %s
            LEFT JOIN (
                SELECT payment_id, SUM(CASE WHEN direction = 'in' THEN amount_minor ELSE -amount_minor END) AS total
                FROM {quote(QboAdjustmentSync._meta.db_table)} WHERE status = %s GROUP BY payment_id
            ) a ON a.payment_id = p.id
            WHERE p.settled_at IS NOT NULL AND p.school_id IN ({", ".join(["%s"] * len(school_ids))}) {since_clause}
        ) settled
        GROUP BY school_id, currency
    """
    params = [*expected_params, SyncStatus.SYNCED, SyncStatus.SYNCED, *school_ids, *since_params]
    with db_connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {
            # PostgreSQL sums bigints as numeric: back to exact ints.
            (school_id, currency): {
                "payments": int(count), "ledger": int(ledger), "books": int(books), "count": int(differ), "differences": [],
            }  # fmt: skip
            for school_id, currency, count, ledger, books, differ in cursor.fetchall()
        }


def reconciliation(
    *, schools: QuerySet[School] | None = None, since: datetime | None = None, differences_limit: int | None = None
) -> Reconciliation:
    """For each school and currency: the ledger's settled net against the sum of the payments'
    documents in QuickBooks, every payment whose documents do not add up to its net (and why; the
    first ``differences_limit`` of them per school and currency, when given), and the payments
    that are not final after their last check. ``since`` limits it to payments settled from then
    on. A school without a QuickBooks connection is listed with its ledger only: nothing is
    expected in its books.

    The totals are summed by the database and only the payments that differ are read, a column
    at a time: at a million payments, loading every settled payment took a minute and gigabytes."""
    from payments.models import TransactionFact
    from payments.state import IN_FLIGHT_STATES

    schools = schools if schools is not None else School.objects.all()
    settled = Payment.objects.filter(school__in=schools, settled_at__isnull=False)
    if since is not None:
        settled = settled.filter(settled_at__gte=since)
    codes = dict(School.objects.filter(pk__in=schools.values("pk")).values_list("pk", "code"))
    connected = {
        connection.school_id: connection
        for connection in QboConnection.objects.filter(school__in=schools, status=QboConnection.Status.CONNECTED)
    }
    rows = _reconciliation_totals(school_ids=list(codes), since=since, connected=connected)
    # A payment differs when its documents do not add up to its net, and either it has some or its
    # school's books are expected to hold it (connected, and created since the sync's start).
    expected = ~Q(books=0)
    for school_id, connection in connected.items():
        expected |= Q(school_id=school_id, created_at__gte=connection.sync_since)
    differing = settled.annotate(**_books_of_payments()).exclude(books=F("net")).filter(expected)
    columns = ("pk", "school_id", "currency", "status", "net", "books", "student_id", "sync_failed")
    if differences_limit is None:
        listed = [differing.order_by("school__code", "settled_at").values_list(*columns).iterator(chunk_size=2000)]
    else:
        listed = [
            differing.filter(school_id=school_id, currency=currency).order_by("settled_at").values_list(*columns)[:differences_limit]
            for (school_id, currency), row in rows.items() if row["count"]
        ]  # fmt: skip
    for query in listed:
        for payment_id, school_id, currency, status, payment_net, books, student_id, sync_failed in query:
            if student_id is None:
                reason = "not mapped to a student"
            elif sync_failed:
                reason = "QuickBooks sync failed"
            else:
                reason = "not in QuickBooks yet"
            rows[(school_id, currency)]["differences"].append(
                PaymentDifference(str(payment_id), status, payment_net, books, reason)
            )
    open_payments = Payment.objects.filter(school__in=schools).filter(
        Q(status__in=IN_FLIGHT_STATES, next_check_at__isnull=True, account__isnull=False)
        | Q(review_flag="status_unknown")
    )
    return Reconciliation(
        schools=[
            SchoolReconciliation(
                school_code=codes[school_id], currency=currency, connected=school_id in connected, payments=row["payments"],
                ledger_net_minor=row["ledger"], books_minor=row["books"], differences=row["differences"],
                difference_count=row["count"],
            )  # fmt: skip
            for (school_id, currency), row in sorted(rows.items(), key=lambda item: (codes[item[0][0]], item[0][1]))
        ],
        not_final=[
            PaymentDifference(
                str(payment.pk), payment.status, 0, 0,
                "the provider could not be asked" if payment.review_flag == "status_unknown" else "no check scheduled",
            )  # fmt: skip
            for payment in open_payments.order_by("created_at")[:1000]
        ],
        waiting_facts=TransactionFact.objects.filter(school__in=schools, payment__isnull=True).count(),
    )
