"""The staff dashboard: today's takings and the work queues, each a link to its filtered list."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from core.money import format_minor
from core.status import PaymentStatus
from dashboard.selectors import staff_dashboard
from payments import selectors as payment_selectors
from quickbooks_sync.selectors import reconciliation

# Payments listed per school and currency in the "Ledger and QuickBooks" panel; the rest are
# counted ("and N more") and listed in full by `manage.py reconcile`.
DIFFERENCES_SHOWN = 20


def _link(name: str, **params) -> str:
    return f"{reverse(name)}?{urlencode(params)}"


def _today_params(day) -> dict:
    # ISO times with the school's offset: the list shows exactly the school's day.
    return {"settled_at__gte": day.start.isoformat(), "settled_at__lt": day.end.isoformat(), "school": day.school_id}


def dashboard_view(request: HttpRequest):
    """"Today" is each school's own day in its time zone. For staff of schools in several
    zones (or on several dates at this moment) each school's takings are its own rows, each
    with its date; the title names the date only when all share it."""
    board = staff_dashboard(user=request.user, now=timezone.now())
    payments_list = "admin:payments_payment_changelist"
    events_list = "admin:payments_webhookevent_changelist"
    days = board.days
    zones = {(day.day, day.time_zone) for day in days.values()}
    several = len(days) > 1
    totals = [
        {
            "school": days[row.school_id].school_code,
            "day": f"{days[row.school_id].day:%a %d %b}",
            "provider": payment_selectors.provider_display_name(row.provider),
            "slug": row.provider,
            "currency": row.currency,
            "count": row.count,
            "amount": format_minor(row.amount_minor, row.currency),
            "url": _link(payments_list, **_today_params(days[row.school_id]), provider__exact=row.provider,
                         currency__exact=row.currency),  # fmt: skip
        }
        for row in board.totals
    ]
    if len(zones) == 1:
        day, zone = next(iter(zones))
        title = f"Today, {day:%A %d %B %Y} ({zone.replace('_', ' ')})"
    else:
        title = "Today, in each school's time zone"
    only = next(iter(days.values())) if len(days) == 1 else None
    queues = [
        ("Unmatched payments (student unknown to the directory)", board.unmatched,
         _link(payments_list, mapping_status__exact="unmatched")),
        ("Payments whose student look-up failed (directory down)", board.directory_failed,
         _link(payments_list, mapping_status__exact="failed")),
        ("Manual payments awaiting review", board.awaiting_review,
         _link(payments_list, status__exact=PaymentStatus.AWAITING_REVIEW)),
        ("Payments waiting to reach QuickBooks", board.sync_waiting, _link(payments_list, sync="waiting")),
        ("Payments whose QuickBooks sync failed", board.sync_failed, _link(payments_list, sync="failed")),
        ("Webhook dead letters (rejected bodies)", board.dead_letters, _link(events_list, status__exact="rejected")),
        ("Webhook events that failed processing", board.failed_events, _link(events_list, status__exact="failed")),
        ("Payments with reports that disagree (check with the provider)", board.conflicts,
         _link(payments_list, conflict="yes")),
        ("Payments the provider could not be asked about", board.status_unknown,
         _link(payments_list, review_flag__exact="status_unknown")),
        ("High-risk payments to look at (risk score at or above the school's threshold)", board.high_risk,
         _link(payments_list, risk="high")),
        ("High-risk payments held from QuickBooks until cleared", board.risk_held, _link(payments_list, risk="held")),
        ("Payments under dispute (chargeback)", board.disputed, _link(payments_list, status__exact=PaymentStatus.DISPUTED)),
        ("Refunds and disputes waiting for their payment", board.waiting_facts,
         _link("admin:payments_transactionfact_changelist", waiting="yes")),
        ("Staff refunds whose provider answer was lost (check its dashboard)", board.refunds_in_doubt,
         _link("admin:payments_refundrequest_changelist", status__exact="in_doubt")),
        ("Outbound webhook deliveries that failed every retry", board.failed_deliveries,
         _link("admin:events_endpointdelivery_changelist", status__exact="failed")),
        ("Outbound webhook endpoints disabled", len(board.disabled_endpoints),
         _link("admin:events_webhookendpoint_changelist", is_active__exact="0")),
    ]  # fmt: skip
    books = reconciliation(schools=payment_selectors.schools_for_user(user=request.user), differences_limit=DIFFERENCES_SHOWN)
    context = {
        **admin.site.each_context(request),
        "title": title,
        "totals": totals,
        "several_schools": several,
        "several_days": len(zones) > 1,
        "all_today_url": _link(payments_list, **_today_params(only)) if only else "",
        "queues": [{"label": label, "count": count, "url": url} for label, count, url in queues],
        "books": [
            {
                "school": row.school_code,
                "currency": row.currency,
                "ledger": format_minor(row.ledger_net_minor, row.currency),
                "books": format_minor(row.books_minor, row.currency) if row.connected else "not connected",
                "differences": [
                    {
                        "url": reverse("admin:payments_payment_change", args=[difference.payment_id]),
                        "net": format_minor(difference.net_minor, row.currency),
                        "booked": format_minor(difference.books_minor, row.currency),
                        "reason": difference.reason,
                    }
                    for difference in row.differences
                ],
                "more": row.difference_count - len(row.differences),
            }
            for row in books.schools
        ],
        "not_final": len(books.not_final),
        "disabled_endpoints": [
            {
                "url": endpoint.url,
                "school": endpoint.school.code,
                "reason": endpoint.disabled_reason,
                "disabled_at": endpoint.disabled_at,
                "link": reverse("admin:events_webhookendpoint_change", args=[endpoint.pk]),
            }
            for endpoint in board.disabled_endpoints
        ],
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
