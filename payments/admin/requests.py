"""Payment requests: created one by one or from a CSV upload, cancelled by an action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from payments import selectors, services
from payments.admin.display import AmountSearch, SchoolColumnForManySchools, amount_cell, payment_how, school_time
from payments.admin.scoping import SchoolScopedAdmin
from payments.admin.summary import request_summary_rows, request_todo
from payments.forms import CsvImportForm, PaymentRequestAdminForm
from payments.models import AuditLog, Notice, Payment, PaymentRequest


class PaymentInline(admin.TabularInline):
    model = Payment
    fk_name = "payment_request"
    verbose_name_plural = "Payments for this request"
    fields = ("when", "how", "reference", "amount", "status", "review_flag")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # a payment is never edited here; its own page has the buttons

    @admin.display(description="When")
    def when(self, obj):
        return school_time(obj.created_at, obj.school)

    @admin.display(description="How")
    def how(self, obj):
        return payment_how(obj)

    @admin.display(description="Amount")
    def amount(self, obj):
        return amount_cell(obj.amount_display)


class NoticeInline(admin.TabularInline):
    """Every message sent to the parent about this request: pay links, reminders, receipts."""

    model = Notice
    fk_name = "payment_request"
    verbose_name = "message to the parent"
    verbose_name_plural = "Messages to the parent"
    fields = ("created_at", "kind", "channel", "recipient", "status", "sent_at", "last_error", "requested_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-created_at",)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PaymentRequest)
class PaymentRequestAdmin(SchoolColumnForManySchools, AmountSearch, SchoolScopedAdmin):
    form = PaymentRequestAdminForm
    # Narrow enough for a laptop beside the filters; the school column only for staff of several.
    list_display = ("created", "student_name", "description", "amount", "due", "status")
    list_display_links = ("created", "student_name")
    list_filter = ("status", "due_date", "school")
    list_select_related = ("school", "student")
    search_fields = ("student__student_number", "student__full_name", "description", "parent_email", "parent_phone")
    search_help_text = "Student name or number, description, the parent's email or phone, or an amount (450,000)."
    autocomplete_fields = ("student",)
    date_hierarchy = "created_at"
    actions = ["cancel_requests", "send_by_email", "send_by_sms"]
    inlines = [PaymentInline, NoticeInline]
    change_list_template = "admin/payments/paymentrequest/change_list.html"

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj):
        return school_time(obj.created_at, obj.school)

    @admin.display(description="Student", ordering="student__full_name")
    def student_name(self, obj):
        return obj.student.full_name or obj.student.student_number

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, obj):
        return amount_cell(obj.amount_display)

    @admin.display(description="Due", ordering="due_date")
    def due(self, obj):
        return obj.due_date.strftime("%d %b %Y") if obj.due_date else "—"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        payment_request = self.get_object(request, object_id)
        extra = {}
        if payment_request is not None:
            extra = {
                "summary": request_summary_rows(payment_request),
                "todo": request_todo(payment_request),
                "title": "Payment request",
                "subtitle": f"{payment_request.description}, {payment_request.amount_display}",
            }
        return super().change_view(request, object_id, form_url, extra_context={**extra, **(extra_context or {})})

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a new request has no payments

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # What the parent is asked to pay never changes under them: cancel and create a new one.
        return (
            "school", "student", "amount_display", "status", "pay_link", "send_to_parent", "paid_payment", "paid_at",
            "created_by",
        )  # fmt: skip

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("school", "student", "description", "amount", "currency", "due_date", "parent_email", "parent_phone")
        return (
            "description", "due_date", "parent_email", "parent_phone", "send_to_parent", "installments_allowed",
            "installment_min_minor", *self._record_fields,
        )  # fmt: skip

    _record_fields = ("pay_link", "school", "student", "amount_display", "status", "paid_payment", "paid_at", "created_by")

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return super().get_fieldsets(request, obj)
        # What may change (the text and the parent's contact) open; the record itself folded.
        return (
            (
                "What the parent reads, and how to reach them",
                {"fields": ("description", "due_date", "parent_email", "parent_phone", "send_to_parent")},
            ),
            ("Paying in parts", {"fields": ("installments_allowed", "installment_min_minor")}),
            ("The request as recorded", {"classes": ("collapse",), "fields": self._record_fields}),
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            kwargs["form"] = admin.ModelAdmin.form
            # Parts: the school's setting unless this request says otherwise (docs/parents.md).
            kwargs["fields"] = (
                "description", "due_date", "parent_email", "parent_phone", "installments_allowed", "installment_min_minor",
            )  # fmt: skip
            return super().get_form(request, obj, change=change, **kwargs)
        form = super().get_form(request, obj, change=change, **kwargs)
        schools = selectors.schools_for_user(user=request.user)

        class ScopedForm(form):
            def __init__(self, *args, **kw):
                super().__init__(*args, schools=schools, **kw)

        return ScopedForm

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created = services.payment_request_create(
            school=form.cleaned_data["school"], draft=form.draft, actor=request.user
        )
        obj.pk = created.pk
        obj.__dict__.update(created.__dict__)

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    def has_delete_permission(self, request, obj=None):
        return False  # cancel instead: payments may point at the request

    @admin.display(description="Pay link")
    def pay_link(self, obj):
        return format_html('<a href="{0}" target="_blank" rel="noopener">{0}</a>', obj.pay_url)

    @admin.display(description="Send to the parent")
    def send_to_parent(self, obj):
        if obj.status != PaymentRequest.Status.OPEN:
            return "Only an open request's pay link can be sent."
        # Buttons of the change form itself (formaction): its CSRF token goes with them, and the
        # page needs no form of its own (forms cannot nest).
        buttons = []
        for channel, label, contact in (
            (Notice.Channel.EMAIL, "Send the pay link by email", obj.parent_email),
            (Notice.Channel.SMS, "Send the pay link by SMS", obj.parent_phone),
        ):
            url = reverse("admin:payments_paymentrequest_send", args=[obj.pk, channel])
            if contact:
                buttons.append(format_html(
                    '<button type="submit" class="button" formaction="{}" formmethod="post" formnovalidate>{}</button> ', url, label
                ))  # fmt: skip
        if not buttons:
            return "Add the parent's email address or phone number (and save) to send the pay link."
        return format_html("".join(["{}"] * len(buttons)), *buttons)

    def _send(self, request, queryset, channel: str) -> None:
        sent, refused = 0, []
        for payment_request in queryset:
            try:
                services.payment_request_send(
                    payment_request_id=payment_request.pk, channel=channel,
                    actor_type=AuditLog.ActorType.STAFF, actor=request.user.get_username(),
                )  # fmt: skip
                sent += 1
            except services.NoticeRefused as exc:
                refused.append(f"{payment_request.student}: {exc.detail}")
        way = "email" if channel == Notice.Channel.EMAIL else "SMS"
        if sent:
            self.message_user(request, f"Sending {sent} pay link(s) by {way}.", messages.SUCCESS)
        for reason in refused[:20]:
            self.message_user(request, f"Not sent: {reason}", messages.WARNING)

    @admin.action(description="Send the pay link by email", permissions=["change"])
    def send_by_email(self, request, queryset):
        self._send(request, queryset, Notice.Channel.EMAIL)

    @admin.action(description="Send the pay link by SMS", permissions=["change"])
    def send_by_sms(self, request, queryset):
        self._send(request, queryset, Notice.Channel.SMS)

    def send_view(self, request: HttpRequest, object_id: str, channel: str):
        """The change page's send buttons: POST only, staff of the request's school."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_change_permission(request, obj):
            raise PermissionDenied
        if channel not in Notice.Channel.values:
            raise Http404("No such channel")
        self._send(request, PaymentRequest.objects.filter(pk=obj.pk), channel)
        return HttpResponseRedirect(reverse("admin:payments_paymentrequest_change", args=[obj.pk]))

    @admin.action(description="Cancel the selected open payment requests", permissions=["change"])
    def cancel_requests(self, request, queryset):
        cancelled = 0
        for payment_request in queryset.filter(status=PaymentRequest.Status.OPEN):
            services.payment_request_cancel(payment_request_id=payment_request.pk, actor=request.user)
            cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} payment request(s).", messages.SUCCESS)

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="payments_paymentrequest_import"),
            path(
                "<path:object_id>/send/<str:channel>/",
                self.admin_site.admin_view(self.send_view),
                name="payments_paymentrequest_send",
            ),
        ] + super().get_urls()

    def import_view(self, request: HttpRequest):
        """Bulk creation from a CSV file: every row is checked first; one error and nothing is saved."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        schools = selectors.schools_for_user(user=request.user)
        form = CsvImportForm(request.POST or None, request.FILES or None, schools=schools)
        result = None
        if request.method == "POST" and form.is_valid():
            result = services.payment_requests_import_csv(
                school=form.cleaned_data["school"], data=form.cleaned_data["file"].read(), actor=request.user
            )
            if not result.errors:
                self.message_user(
                    request,
                    f"Imported {len(result.created)} payment request(s) for {form.cleaned_data['school']}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:payments_paymentrequest_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import payment requests from CSV",
            "opts": self.model._meta,
            "form": form,
            "result": result,
            "columns": services.CSV_COLUMNS,
            "status": 400 if result and result.errors else 200,
        }
        return TemplateResponse(
            request,
            "admin/payments/paymentrequest/import.html",
            context,
            status=400 if result and result.errors else 200,
        )
