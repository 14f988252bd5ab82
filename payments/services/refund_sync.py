"""Staff refund requests kept in step with the payment's ledger (called as each payment settles)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from payments import selectors
from payments.audit import audit_record
from payments.ledger import REFUND_RANK, FactKind, FactSource, RefundStatus
from payments.models import (
    AuditLog,
    Payment,
    RefundRequest,
    TransactionFact,
)
from payments.services.facts import facts_add
from providers.errors import UnknownProvider
from providers.registry import get_provider

logger = logging.getLogger(__name__)

# --- Staff refunds -------------------------------------------------------------------------------
#
# A refund is recorded (RefundRequest) before the provider is asked, the provider is asked with no
# lock held, and its answer becomes a refund fact of the ledger keyed by the provider's id for the
# refund. The money counts when a fact of that key says succeeded, whoever says it first (the
# answer, the provider's API asked later, or its webhook), and once. The request only follows.

# The source_ref of a fact that closes a refund key because another key of the same refund counts
# (a provider reported one refund under two keys): failed, so its money counts once.
SAME_REFUND_AS = "same refund as "
REFUND_REASON_MAX_CHARS = 500



def refund_adapter(*, payment: Payment):
    """The adapter whose refund API refunds ``payment``, or None: a manual payment, or a provider
    without a refund API (SurePay, M-Pesa, the dummy), is refunded by hand."""
    if payment.is_manual or payment.account_id is None:
        return None
    try:
        adapter = get_provider(payment.provider)
    except UnknownProvider:
        return None
    return adapter if selectors.provider_supports_refund(adapter) else None


def refund_requests_sync(*, payment: Payment) -> None:
    """Keep the payment's refund requests in step with its ledger. ``payment_settle`` calls it
    first, with the payment row locked, so what it closes is folded in the same settlement.

    A request follows the refund fact of its key: succeeded or failed once a fact of that key
    says so (whoever said it: the provider's answer, its API asked later, its webhook), and
    submitted while the refund is on its way.

    Paystack's and Chapa's refund webhooks carry no refund id, so their reports land under keys
    of their own, beside the id their refund API answered. Such a report is matched to a request
    by amount, among the payment's refund reports no other request has claimed, and only to a
    request made before the report arrived: the request then follows it, and every other key of
    the same refund is closed with a failed fact (``SAME_REFUND_AS``), so the money counts once,
    under one key. When two refunds of the same amount are on their way, which request gets which
    report cannot be known from the payload; the ledger's total is right either way.
    """
    requests = list(RefundRequest.objects.filter(payment=payment).order_by("created_at", "id"))
    if not requests:
        return
    reports = _refund_reports(payment)
    live = [request for request in requests if request.status != RefundRequest.Status.FAILED]
    if refund_adapter(payment=payment) is not None and not get_provider(payment.provider).refund_events_name_the_refund:
        _refund_reports_match(requests=requests, live=live, reports=reports)
    closing: list[TransactionFact] = []
    # A failed request too: the provider's answer may arrive after its webhook said it failed,
    # and that answer's pending key must be closed like any other.
    for request in requests:
        _refund_request_follow(request, reports=reports, payment=payment, closing=closing)
    facts_add(payment, closing)


@dataclass
class _RefundReport:
    """What the facts of one refund key say."""

    status: str | None  # the highest-ranked status reported, closing facts aside
    amount_minor: int
    first_learnt: datetime
    from_webhooks_only: bool
    closed: bool  # a closing fact made another key stand for it


def _refund_reports(payment: Payment) -> dict[str, _RefundReport]:
    reports: dict[str, _RefundReport] = {}
    for key, status, amount, source, source_ref, created_at in (
        TransactionFact.objects.filter(payment=payment, kind=FactKind.REFUND, amount_minor__isnull=False)
        .order_by("created_at", "id")
        .values_list("key", "status", "amount_minor", "source", "source_ref", "created_at")
    ):
        report = reports.setdefault(key, _RefundReport(None, amount, created_at, True, False))
        if source == FactSource.SYSTEM and source_ref.startswith(SAME_REFUND_AS):
            report.closed = True
            continue
        if report.status is None or REFUND_RANK[status] > REFUND_RANK[report.status]:
            report.status = status
        report.amount_minor = max(report.amount_minor, amount)
        report.from_webhooks_only &= source == FactSource.PROVIDER_EVENT
    return reports


def _refund_request_keys(request: RefundRequest) -> list[str]:
    own = request.provider_refund_id or (request.ledger_key if request.method == RefundRequest.Method.MANUAL else "")
    return ([own] if own else []) + list(request.matched_keys)


def _refund_reports_match(
    *, requests: list[RefundRequest], live: list[RefundRequest], reports: dict[str, _RefundReport]
) -> None:
    """Give each webhook report no request has claimed to the oldest request it can be: the same
    amount, made before the report arrived, and without a final report of its own yet."""
    final = (RefundStatus.SUCCEEDED, RefundStatus.FAILED)
    claimed = {key for request in requests for key in (*_refund_request_keys(request), request.ledger_key) if key}
    unclaimed = sorted(
        (
            (report.first_learnt, key)
            for key, report in reports.items()
            if key not in claimed and report.from_webhooks_only and not report.closed and report.status
        ),
    )
    for _, key in unclaimed:
        report = reports[key]
        for request in live:
            if request.amount_minor != report.amount_minor or report.first_learnt < request.created_at:
                continue
            if any(reports[k].status in final for k in request.matched_keys if k in reports):
                continue
            request.matched_keys = [*request.matched_keys, key]
            break


def _refund_request_follow(
    request: RefundRequest, *, reports: dict[str, _RefundReport], payment: Payment, closing: list[TransactionFact]
) -> None:
    """Set the request's status from its keys' reports, and close every key but the one that
    counts (see ``refund_requests_sync``)."""
    keys = [key for key in _refund_request_keys(request) if key in reports and reports[key].status]
    before = (request.status, request.ledger_key, list(request.matched_keys))
    if keys:
        statuses = {key: reports[key].status for key in keys}
        own = keys[0] if keys[0] not in request.matched_keys else None
        if RefundStatus.FAILED in statuses.values():
            outcome = RefundStatus.FAILED
            counting = next(key for key in keys if statuses[key] == RefundStatus.FAILED)
        elif RefundStatus.SUCCEEDED in statuses.values():
            outcome = RefundStatus.SUCCEEDED
            counting = own if own and statuses[own] == RefundStatus.SUCCEEDED else next(
                key for key in keys if statuses[key] == RefundStatus.SUCCEEDED
            )
        else:
            outcome, counting = RefundStatus.PENDING, keys[0]
        now = timezone.now()
        for key in keys:
            report = reports[key]
            if key == counting or report.closed or report.status == RefundStatus.FAILED:
                continue
            closing.append(
                TransactionFact(
                    kind=FactKind.REFUND,
                    key=key,
                    status=RefundStatus.FAILED,
                    amount_minor=report.amount_minor,
                    currency=payment.currency,
                    occurred_at=now,
                    source=FactSource.SYSTEM,
                    source_ref=f"{SAME_REFUND_AS}{counting}"[:255],
                )
            )
            report.closed = True
        request.ledger_key = counting
        request.status = {
            RefundStatus.FAILED: RefundRequest.Status.FAILED,
            RefundStatus.SUCCEEDED: RefundRequest.Status.SUCCEEDED,
            RefundStatus.PENDING: RefundRequest.Status.SUBMITTED,
        }[outcome]
        if request.status in (RefundRequest.Status.SUCCEEDED, RefundRequest.Status.FAILED):
            request.finished_at = request.finished_at or now
            request.next_check_at = None
    if (request.status, request.ledger_key, list(request.matched_keys)) == before:
        return
    request.save(update_fields=["status", "ledger_key", "matched_keys", "finished_at", "next_check_at", "updated_at"])
    if request.status != before[0]:
        audit_record(
            action=f"refund.{request.status}",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="ledger",
            school_id=request.school_id,
            target=request,
            details={
                "from": before[0],
                "ledger_key": request.ledger_key,
                "provider_refund_id": request.provider_refund_id,
                "matched_keys": request.matched_keys,
            },
        )
