"""Forms of the parent pages and of the staff admin views. Each checks its input, then a view
hands the cleaned data to one service function, which checks the business rules again."""

from __future__ import annotations

from datetime import datetime

from django import forms
from django.conf import settings
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core.ip_allowlist import IpAllowlistInvalid, ip_allowlist_parse
from core.money import MoneyError, exponent, format_minor, parse_major_amount
from core.phone import PhoneInvalid, normalize_mpesa_phone
from payments import receipts
from payments.contact import ContactInvalid, parent_email_clean
from payments.models import MANUAL_METHODS, PaymentMethod, PaymentRequest, ProviderAccount, School
from providers.registry import get_provider, provider_slugs


def amount_field(label: str, currency: str, **kwargs) -> forms.CharField:
    places = exponent(currency)
    example = "450,000" if places == 0 else "1,500." + "0" * places
    return forms.CharField(
        label=f"{label} ({currency})",
        max_length=32,
        help_text=_("For example %(example)s") % {"example": example},
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
        **kwargs,
    )


def clean_amount(value: str, currency: str) -> int:
    try:
        minor = parse_major_amount(value.strip(), currency)
    except MoneyError as exc:
        raise forms.ValidationError(str(exc)) from exc
    if minor <= 0:
        raise forms.ValidationError("Enter an amount greater than zero.")
    return minor


class PhoneForm(forms.Form):
    """The payer's number for an on-phone prompt; the provider comes from the button pressed."""

    phone = forms.CharField(
        label=gettext_lazy("M-Pesa phone number"),
        max_length=20,
        help_text=gettext_lazy("The phone that will receive the payment prompt, for example 0712 345 678."),
        widget=forms.TextInput(attrs={"inputmode": "tel", "autocomplete": "tel"}),
    )

    def clean_phone(self) -> str:
        try:
            return normalize_mpesa_phone(self.cleaned_data["phone"])
        except PhoneInvalid as exc:
            raise forms.ValidationError(str(exc)) from exc


class PayerEmailForm(forms.Form):
    """The payer's email address, for a provider whose checkout needs one (Paystack,
    Flutterwave) when staff did not give the request one. Checked again by the checkout service."""

    email = forms.CharField(
        label=gettext_lazy("Your email address"),
        max_length=254,
        help_text=gettext_lazy("The payment provider sends your receipt there."),
        error_messages={"required": gettext_lazy("Enter your email address: the payment provider needs it.")},
        widget=forms.EmailInput(attrs={"autocomplete": "email", "inputmode": "email"}),
    )

    def clean_email(self) -> str:
        try:
            return parent_email_clean(self.cleaned_data["email"])
        except ContactInvalid as exc:
            raise forms.ValidationError(str(exc)) from exc


def parent_amount_clean(value: str, currency: str) -> int:
    """``clean_amount`` in a parent's words: never the parser's own message."""
    try:
        minor = parse_major_amount(value.strip(), currency)
    except MoneyError as exc:
        places = exponent(currency)
        if places == 0 and "." in value:
            raise forms.ValidationError(
                _("Write the amount without decimals: %(currency)s has none.") % {"currency": currency}
            ) from exc
        example = "120,000" if places == 0 else "1,500." + "0" * places
        raise forms.ValidationError(
            _("Write the amount in figures only, for example %(example)s.") % {"example": example}
        ) from exc
    if minor <= 0:
        raise forms.ValidationError(_("Enter an amount greater than zero."))
    return minor


class InstallmentAmountForm(forms.Form):
    """How much a parent pays now, of a request that may be paid in parts. The checkout service
    checks the bounds again under the request's lock."""

    def __init__(self, *args, payment_request: PaymentRequest, installments, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = payment_request.currency
        self.installments = installments
        self.fields["amount"] = amount_field(_("Amount to pay now"), self.currency)
        self.fields["amount"].help_text = _("Between %(low)s and %(high)s.") % {
            "low": format_minor(installments.smallest_minor, self.currency),
            "high": format_minor(installments.balance_minor, self.currency),
        }

    def clean_amount(self) -> int:
        minor = parent_amount_clean(self.cleaned_data["amount"], self.currency)
        terms = self.installments
        if minor > terms.balance_minor:
            raise forms.ValidationError(
                _("That is more than is due. Pay at most %(high)s.") % {"high": format_minor(terms.balance_minor, self.currency)}
            )
        if minor < terms.smallest_minor:
            raise forms.ValidationError(
                _("Pay at least %(low)s at a time.") % {"low": format_minor(terms.smallest_minor, self.currency)}
            )
        return minor


class ManualPaymentForm(forms.Form):
    method = forms.ChoiceField(
        label=gettext_lazy("How did you pay?"),
        choices=[(method.value, method.label) for method in MANUAL_METHODS],
        widget=forms.RadioSelect,
    )
    reference = forms.CharField(
        label=gettext_lazy("Reference"),
        max_length=128,
        required=False,
        help_text=gettext_lazy("The bank or mobile-money transaction reference, or the cash receipt number."),
    )
    receipt = forms.FileField(
        label=gettext_lazy("Receipt (optional)"),
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": receipts.ACCEPT_ATTRIBUTE}),
    )

    def __init__(self, *args, payment_request: PaymentRequest, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = payment_request.currency
        self.fields["amount"] = amount_field(_("Amount paid"), self.currency)
        self.fields["receipt"].help_text = _("A photo or PDF of the receipt: %(types)s. At most %(size)s.") % {
            "types": receipts.ACCEPTED_TYPES,
            "size": receipts.size_text(settings.MANUAL_RECEIPT_MAX_BYTES),
        }
        if not self.is_bound:
            self.initial.setdefault("amount", payment_request.amount_display.split(" ", 1)[1])
        self.order_fields(["method", "amount", "reference", "receipt"])

    def clean_amount(self) -> int:
        return parent_amount_clean(self.cleaned_data["amount"], self.currency)

    def clean_receipt(self):
        receipt = self.cleaned_data.get("receipt")
        if receipt:
            try:
                receipts.receipt_check(receipt)
            except receipts.ReceiptInvalid as exc:
                raise forms.ValidationError(str(exc)) from exc
        return receipt or None

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("method") and cleaned["method"] != PaymentMethod.CASH and not cleaned.get("reference", "").strip():
            self.add_error("reference", _("Enter the reference of your transfer."))
        return cleaned


class SimulateForm(forms.Form):
    outcome = forms.ChoiceField(choices=[("succeeded", "Pay"), ("failed", "Decline")])

    def __init__(self, *args, currency: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.fields["amount"] = amount_field("Amount to pay", currency)

    def clean_amount(self) -> int:
        return clean_amount(self.cleaned_data["amount"], self.currency)


# --- Staff (Django admin) -------------------------------------------------------------------------


class PaymentRequestAdminForm(forms.ModelForm):
    """Staff type the amount in major units; it is stored in minor units, parsed strictly. The
    student is chosen from the school's students (the admin makes it an autocomplete)."""

    amount = forms.CharField(label="Amount", max_length=32, help_text="In major units, e.g. 450,000 UGX or 1,500.50 KES.")
    currency = forms.CharField(label="Currency", max_length=3, required=False, help_text="Blank: the school's currency.")

    class Meta:
        model = PaymentRequest
        fields = ["school", "student", "description", "due_date", "parent_email", "parent_phone"]
        help_texts = {
            "student": "Type a name or a student number.",
            "parent_email": "Optional. Paystack and Flutterwave need the payer's email: given here, the parent is not asked for it.",
            "parent_phone": "Optional. Offered for M-Pesa prompts.",
        }

    def __init__(self, *args, schools=None, **kwargs):
        super().__init__(*args, **kwargs)
        if schools is not None:
            self.fields["school"].queryset = schools
            school_field_for_one_school(self.fields["school"], schools)
        self.order_fields(
            ["school", "student", "description", "amount", "currency", "due_date", "parent_email", "parent_phone"]
        )

    def clean(self):
        from payments.services import PaymentRequestInvalid, payment_request_draft

        cleaned = super().clean()
        school = cleaned.get("school")
        student = cleaned.get("student")
        if school is None:
            return cleaned
        try:
            self.draft = payment_request_draft(
                school=school,
                # The draft checks the student is the chosen school's.
                student_number=student.student_number if student else "",
                description=cleaned.get("description", ""),
                amount=cleaned.get("amount", ""),
                currency=cleaned.get("currency", ""),
                due_date=cleaned.get("due_date"),
                parent_email=cleaned.get("parent_email", ""),
                parent_phone=cleaned.get("parent_phone", ""),
            )
        except PaymentRequestInvalid as exc:
            for name, message in exc.errors.items():
                name = "student" if name == "student_id" else name
                if name == "student" and "student" in self.errors:
                    continue  # already "required" or "not a valid choice"
                self.add_error(name if name in self.fields else None, message)
        return cleaned


def school_field_for_one_school(field: forms.ModelChoiceField, schools) -> None:
    """A staff member of one school never picks it: the field is chosen for them and hidden.
    (A forged value is still checked against ``schools``.)"""
    only = list(schools[:2])
    if len(only) == 1:
        field.initial = only[0].pk
        field.widget = forms.HiddenInput()


class CsvImportForm(forms.Form):
    school = forms.ModelChoiceField(queryset=School.objects.none())
    file = forms.FileField(label="CSV file", widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}))

    def __init__(self, *args, schools, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["school"].queryset = schools
        school_field_for_one_school(self.fields["school"], schools)


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[("confirm", "Confirm: the money arrived"), ("reject", "Reject: the money did not arrive")],
        widget=forms.RadioSelect,
    )
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=1000,
        help_text="What you checked (bank statement line, cash book page), or why you reject it.",
    )


class MapStudentForm(forms.Form):
    student_number = forms.CharField(max_length=64, label="Student id", help_text="The school's own student id.")
    full_name = forms.CharField(
        max_length=200, required=False, help_text="Only needed for a student this service has not seen yet."
    )


# --- Provider accounts (staff admin) -----------------------------------------------------------

IP_ALLOWLIST_HELP = (
    "Optional. Only these addresses may deliver this account's webhooks: one IPv4 or IPv6 address or "
    "CIDR network per line (203.0.113.7, 203.0.113.0/24, 2001:db8::/32); blank lines and # comments "
    "are ignored. Empty: any address (the signature is checked either way)."
)


class WriteOnlyTextarea(forms.Textarea):
    """A textarea for secrets: what was typed is never sent back, not even to redisplay the
    form after an error."""

    def format_value(self, value):
        return None


def _ip_allowlist_clean(value: str) -> str:
    try:
        ip_allowlist_parse(value)
    except IpAllowlistInvalid as exc:
        raise forms.ValidationError(f"{capfirst(str(exc))}.") from exc
    return value


class AccountCreateForm(forms.Form):
    """Connect one of the staff user's schools to a provider. ``services.account_create`` checks
    everything again; this form only explains what each provider needs."""

    school = forms.ModelChoiceField(queryset=School.objects.none())
    provider = forms.ChoiceField()
    test_mode = forms.BooleanField(
        required=False, help_text="Use the provider's test keys and sandbox; no real money moves."
    )
    webhook_secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave blank to generate a strong one (shown once, for the provider's dashboard). "
        "Providers that issue their own (Stripe's whsec_..., Omise): paste theirs.",
    )
    api_key = forms.CharField(
        label="Secret API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="For starting and checking payments (sk_..., CHASECK..., FLWSECK..., skey_...). "
        "Paystack: required, it also signs the webhooks.",
    )
    credentials = forms.CharField(
        label="Other credentials",
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 4, "autocomplete": "off"}),
        help_text="Optional, NAME=VALUE per line (M-Pesa: consumer_key, consumer_secret, shortcode, passkey).",
    )
    ip_allowlist = forms.CharField(
        label="IP allowlist", required=False, widget=forms.Textarea(attrs={"rows": 4}), help_text=IP_ALLOWLIST_HELP
    )

    def __init__(self, *args, schools, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["school"].queryset = schools
        school_field_for_one_school(self.fields["school"], schools)
        self.fields["provider"].choices = [("", "---------")] + [
            (slug, get_provider(slug).display_name) for slug in provider_slugs()
        ]

    def clean_credentials(self) -> dict[str, str]:
        credentials = {}
        for number, line in enumerate(self.cleaned_data["credentials"].splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                # The line may hold a secret: name it by number only.
                raise forms.ValidationError(f"Line {number} is not NAME=VALUE.")
            credentials[name.strip()] = value.strip()
        return credentials

    def clean_ip_allowlist(self) -> str:
        return _ip_allowlist_clean(self.cleaned_data["ip_allowlist"])

    def clean(self):
        cleaned = super().clean()
        slug = cleaned.get("provider")
        if slug and get_provider(slug).signs_with_api_key:
            name = get_provider(slug).display_name
            if not cleaned.get("api_key"):
                self.add_error(
                    "api_key",
                    f"{name} signs its webhooks with your secret API key: enter the secret key from "
                    f"{name}'s dashboard. It is the webhook secret too, so nothing is generated.",
                )
            if cleaned.get("webhook_secret") and cleaned.get("webhook_secret") != cleaned.get("api_key"):
                self.add_error("webhook_secret", f"Leave this blank: {name} signs with the secret API key.")
        return cleaned


class AccountChangeForm(forms.ModelForm):
    """The change page's editable switches. Secrets are not fields here: they change only by
    rotation, and are never rendered."""

    class Meta:
        model = ProviderAccount
        fields = ("test_mode", "active", "ip_allowlist")
        help_texts = {
            "ip_allowlist": IP_ALLOWLIST_HELP,
            "active": "Inactive: its webhooks are refused (401) and parents cannot pay through it.",
        }

    def clean_ip_allowlist(self) -> str:
        return _ip_allowlist_clean(self.cleaned_data["ip_allowlist"])


class AccountRotateForm(forms.Form):
    grace_hours = forms.FloatField(
        label="Grace period (hours)",
        initial=24,
        min_value=0,
        max_value=720,
        help_text="How long the current secret keeps verifying, while the provider's side is switched. "
        "0 ends it at once.",
    )
    new_secret = forms.CharField(
        label="New secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave blank to generate one (shown once). Providers that issue their own secret "
        "(Stripe, Omise): roll it in their dashboard and paste the new one.",
    )
    # The account's updated_at when the form was shown: a resubmitted form rotates nothing.
    version = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args, adapter, **kwargs):
        super().__init__(*args, **kwargs)
        if adapter.signs_with_api_key:
            field = self.fields["new_secret"]
            field.required = True
            field.label = "New secret API key"
            field.help_text = (
                f"{adapter.display_name} signs its webhooks with your secret API key: roll the key in "
                f"{adapter.display_name}'s dashboard and enter the new one. It becomes the API key too."
            )
            field.error_messages["required"] = f"Enter the new secret key from {adapter.display_name}'s dashboard."

    def clean_version(self) -> datetime:
        try:
            return datetime.fromisoformat(self.cleaned_data["version"])
        except ValueError as exc:
            raise forms.ValidationError("Reload the page and try again.") from exc


class RefundForm(forms.Form):
    """Staff refund a payment: how much (major units of its currency) and why."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=500,
        help_text="Why the money goes back (kept in the audit log; sent to the provider as a note where it takes one).",
    )
    # A token of this form, sent back with it: a form submitted twice (a reload) makes one refund.
    form_key = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args, currency: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.fields["amount"] = amount_field("Amount to refund", currency)
        self.order_fields(["amount", "reason", "form_key"])

    def clean_amount(self) -> int:
        return clean_amount(self.cleaned_data["amount"], self.currency)


class RefundResolveForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[
            ("not_made", "The provider has no such refund: release the amount"),
            ("send_again", "Send it again (same idempotency key)"),
        ],
        widget=forms.RadioSelect,
    )
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=1000,
        help_text="What you checked in the provider's dashboard.",
    )
