"""Webhook events: the raw body, the verification and processing result, replay.

Read-only: nothing here edits an event. The one write is replay (``webhooks.replay
.webhook_event_replay``), offered as a list action and a button on the detail page to staff with
the change permission ("replay"), on their own schools' events only.
"""

from __future__ import annotations

import json
from collections import Counter

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from payments import selectors as payment_selectors
from payments.admin.display import ProviderNameFilter, SchoolColumnForManySchools, amount_cell, school_time
from payments.admin.scoping import SchoolScopedAdmin
from payments.models import WebhookEvent
from providers.errors import UnknownProvider
from providers.registry import get_provider
from webhooks import replay, selectors
from webhooks.replay import ReplayOutcome, webhook_event_replay

Status = WebhookEvent.Status

# outcome -> (message for n events, level)
REPLAY_MESSAGES = {
    ReplayOutcome.REQUEUED: ("{n} failed event(s) queued for processing again.", messages.SUCCESS),
    ReplayOutcome.REVIVED: ("{n} dead letter(s) valid now and queued for processing.", messages.SUCCESS),
    ReplayOutcome.SUPERSEDED: (
        (
            "{n} dead letter(s) valid now, but the provider's redelivery of the same event was stored "
            "already: marked superseded, not applied."
        ),
        messages.WARNING,
    ),
    ReplayOutcome.STILL_INVALID: (
        "{n} dead letter(s) still invalid: each event's page lists the errors.",
        messages.WARNING,
    ),
    ReplayOutcome.PURGED: ("{n} event(s) not replayed: the body was purged by the retention policy.", messages.ERROR),
    ReplayOutcome.REFUSED: (
        "{n} event(s) not replayed: only failed events and dead letters can be replayed.",
        messages.ERROR,
    ),
}
QUEUED = (ReplayOutcome.REQUEUED, ReplayOutcome.REVIVED)


@admin.register(WebhookEvent)
class WebhookEventAdmin(SchoolColumnForManySchools, SchoolScopedAdmin):
    school_column = "school"
    school_path = "account__school"
    # Narrow enough for a laptop beside the filters: the event id, attempts and errors are on the
    # event's page; the school column only for staff of several schools.
    list_display = ("received", "provider", "event_type", "status_label", "payment_link")
    list_display_links = ("received",)
    list_filter = ("status", ("account__provider", ProviderNameFilter), "account__school", "received_at")
    list_select_related = ("account__school", "payment")
    search_fields = ("external_event_id", "event_type", "payment__external_txn_id", "payment__reference")
    search_help_text = "Event id, event type, or the payment's transaction id or reference."
    actions = ("replay_events",)
    change_form_template = "admin/payments/webhookevent/change_form.html"
    fieldsets = (
        ("The event as received", {"classes": ("collapse",), "fields": ("school", "provider", "external_event_id", "event_type", "received_at", "remote_addr")}),
        ("Verification and parsing", {"classes": ("collapse",), "fields": ("verification", "parse_result")}),
        (
            "Processing",
            {
                "classes": ("collapse",),
                "fields": (
                    "status",
                    "result",
                    "last_error",
                    "attempts",
                    "next_attempt_at",
                    "applied_at",
                    "processed_at",
                    "payment_link",
                )
            },
        ),
        ("Headers and body (for engineers)", {"classes": ("collapse",), "fields": ("headers_shown", "body_shown")}),
        ("Audit log", {"classes": ("collapse",), "fields": ("history",)}),
    )
    readonly_fields = (
        "school",
        "provider",
        "verification",
        "parse_result",
        "payment_link",
        "headers_shown",
        "body_shown",
        "history",
    )

    # --- Permissions: look, and replay; never edit ----------------------------------------------

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # The form would save every column as loaded, over the worker's concurrent changes.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_replay_permission(self, request, obj=None) -> bool:
        """The model's change permission (the staff group has it), on the user's schools only."""
        return super().has_change_permission(request, obj)

    # --- Columns and fields -------------------------------------------------------------------

    @admin.display(description="Received", ordering="received_at")
    def received(self, obj: WebhookEvent):
        return school_time(obj.received_at, obj.account.school)

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj: WebhookEvent) -> str:
        return obj.get_status_display()

    @admin.display(description="School", ordering="account__school__code")
    def school(self, obj: WebhookEvent) -> str:
        return obj.account.school.code

    @admin.display(description="Provider", ordering="account__provider")
    def provider(self, obj: WebhookEvent) -> str:
        return payment_selectors.provider_display_name(obj.account.provider)

    @admin.display(description="Payment")
    def payment_link(self, obj: WebhookEvent):
        if obj.payment is None:
            return "—"
        payment = obj.payment
        return format_html(
            '<a href="{}">{}, {}</a>',
            reverse("admin:payments_payment_change", args=[payment.pk]),
            amount_cell(payment.amount_display),
            payment.get_status_display().lower(),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        event = self.get_object(request, object_id)
        extra = {}
        if event is not None:
            extra = {
                "summary": self.summary_rows(event),
                "todo": self.todo_items(request, event),
                "title": "Webhook event",
                "subtitle": f"From {self.provider(event)}: {event.event_type or event.get_status_display().lower()}",
            }
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

    def get_fieldsets(self, request, obj=None):
        if obj is None or obj.status not in (Status.REJECTED, Status.FAILED):
            return self.fieldsets
        # Why it was refused or failed is what staff came to read: that section open.
        return tuple(
            (name, {**options, "classes": ()}) if name in ("Verification and parsing", "Processing") else (name, options)
            for name, options in self.fieldsets
        )

    def summary_rows(self, event: WebhookEvent) -> list[tuple[str, object]]:
        school = event.account.school
        return [
            ("From", f"{self.provider(event)} ({event.account.school.name})"),
            ("What", event.event_type or "Not stated"),
            ("Received", school_time(event.received_at, school, seconds=True)),
            ("Status", event.get_status_display()),
            ("Outcome", event.result or event.last_error or ("Waiting to be processed" if event.status in (Status.PENDING, Status.PROCESSING) else "—")),
            ("Payment", self.payment_link(event)),
            ("Event id", event.external_event_id or "—"),
            ("Attempts", str(event.attempts)),
        ]  # fmt: skip

    def todo_items(self, request, event: WebhookEvent) -> list[tuple[str, str]]:
        if event.status == Status.REJECTED:
            return [("The body was refused (see Verification and parsing below). Once the provider's format or our "
                     "account is fixed, replay it with the button above.", "")]  # fmt: skip
        if event.status == Status.FAILED:
            return [(f"Processing failed: {event.last_error}. Replay it with the button above once the cause is fixed.", "")]
        return []

    @admin.display(description="Signature / authentication")
    def verification(self, obj: WebhookEvent):
        # webhook_receive stores an event, dead letters included, only after the adapter's
        # verify_signature passed; a failed check is answered 401 and only audited.
        adapter = _adapter(obj)
        method = (
            adapter.verification_method if adapter else f"provider {obj.account.provider!r} is no longer configured"
        )
        return format_html(
            "<strong>Passed on receipt</strong>: {}.<br>Every stored event passed this check before it was "
            "stored, dead letters included (deliveries that fail it are refused and not stored). Replay does "
            "not check it again.",
            method,
        )

    @admin.display(description="Parsing")
    def parse_result(self, obj: WebhookEvent):
        if obj.status == Status.REJECTED:
            if not obj.errors:
                return format_html("<strong>Invalid</strong>: {}", obj.last_error or "no detail recorded")
            return format_html(
                "<strong>Invalid</strong> ({}):<ul>{}</ul>",
                obj.last_error or "field errors",
                format_html_join(
                    "",
                    "<li><code>{}</code>: {}</li>",
                    ((e.get("field", "?"), e.get("message", "")) for e in obj.errors),
                ),
            )
        if obj.status == Status.SUPERSEDED:
            return format_html("<strong>Valid on replay</strong>; {}.", obj.result)
        return format_html("<strong>Valid</strong>: stored as event <code>{}</code>.", obj.external_event_id)

    @admin.display(description="Headers")
    def headers_shown(self, obj: WebhookEvent):
        if obj.body_purged_at is not None:
            return _purged(obj)
        if not obj.headers:
            return "(none stored)"
        shown = selectors.webhook_event_headers_shown(headers=obj.headers, adapter=_adapter(obj))
        return format_html("<pre>{}</pre>", json.dumps(shown, indent=2, ensure_ascii=False))

    @admin.display(description="Body")
    def body_shown(self, obj: WebhookEvent):
        if obj.body_purged_at is not None:
            return _purged(obj)
        if not obj.raw_body:
            return "(empty body)"
        pretty = pretty_json(obj.raw_body)
        if pretty is None:
            return format_html("Not valid JSON; shown as received:<pre>{}</pre>", obj.raw_body)
        return format_html("<pre>{}</pre>", pretty)

    @admin.display(description="Audit log")
    def history(self, obj: WebhookEvent):
        entries = selectors.webhook_event_history(event=obj)
        if not entries:
            return "(no entries)"
        return format_html(
            "<table><thead><tr><th>When</th><th>What</th><th>Who</th><th>Details</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                (
                    (
                        f"{timezone.localtime(entry.created_at):%Y-%m-%d %H:%M:%S}",
                        entry.action,
                        f"{entry.actor_type}: {entry.actor}" if entry.actor else entry.actor_type,
                        json.dumps(entry.details, ensure_ascii=False, sort_keys=True),
                    )
                    for entry in entries
                ),
            ),
        )

    # --- Replay ---------------------------------------------------------------------------------

    @admin.action(description="Replay selected dead letters and failed events", permissions=["replay"])
    def replay_events(self, request: HttpRequest, queryset):
        # The queryset is the user's schools' events only: another school's ids never get here.
        outcomes = Counter(
            webhook_event_replay(event_id=event_id, actor=request.user).outcome
            for event_id in queryset.order_by("pk").values_list("pk", flat=True)
        )
        if not outcomes:
            self.message_user(request, "No events were replayed.", messages.WARNING)
        for outcome, (text, level) in REPLAY_MESSAGES.items():
            if outcomes[outcome]:
                self.message_user(request, text.format(n=outcomes[outcome]), level)

    def get_urls(self):
        return [
            path(
                "<int:object_id>/replay/",
                self.admin_site.admin_view(self.replay_view),
                name="payments_webhookevent_replay",
            ),
        ] + super().get_urls()

    def replay_view(self, request: HttpRequest, object_id: int):
        """The detail page's Replay button (POST; admin_view checks CSRF and the staff login)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        event = self.get_object(request, str(object_id))  # scoped: another school's is not found
        if event is None:
            raise Http404("No such webhook event")
        if not self.has_replay_permission(request, event):
            raise PermissionDenied
        result = webhook_event_replay(event_id=event.pk, actor=request.user)
        self.message_user(request, result.detail, messages.SUCCESS if result.outcome in QUEUED else messages.WARNING)
        return HttpResponseRedirect(reverse("admin:payments_webhookevent_change", args=[event.pk]))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        replayable = obj is not None and obj.status in replay.REPLAYABLE and obj.body_purged_at is None
        if replayable and self.has_replay_permission(request, obj):
            context["replay_url"] = reverse("admin:payments_webhookevent_replay", args=[obj.pk])
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)


def _adapter(obj: WebhookEvent):
    try:
        return get_provider(obj.account.provider)
    except UnknownProvider:
        return None


def _purged(obj: WebhookEvent):
    return format_html(
        "<em>Purged on {} by the retention policy</em>: the body and headers are no longer stored.",
        f"{timezone.localtime(obj.body_purged_at):%Y-%m-%d %H:%M}",
    )


# --- Pretty JSON, exactly as received --------------------------------------------------------------


class _Number(str):
    """A JSON number kept as its text: 100.50 stays 100.50, never a rounded float."""


class _Object(list):
    """A JSON object as its (key, value) pairs: order and any repeated key kept as received."""


def pretty_json(text: str) -> str | None:
    """``text`` indented for reading, every token as received; None when it is not JSON."""
    try:
        value = json.loads(
            text, parse_float=_Number, parse_int=_Number, parse_constant=_Number, object_pairs_hook=_Object
        )
        return _dump(value, 0)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting; shown as text
        return None


def _dump(value, depth: int) -> str:
    inner, outer = "  " * (depth + 1), "  " * depth
    if isinstance(value, _Object):
        items = [f"{inner}{json.dumps(key, ensure_ascii=False)}: {_dump(item, depth + 1)}" for key, item in value]
        return "{\n" + ",\n".join(items) + f"\n{outer}}}" if items else "{}"
    if isinstance(value, list):
        items = [f"{inner}{_dump(item, depth + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{outer}]" if items else "[]"
    if isinstance(value, _Number):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # a string, true, false or null
