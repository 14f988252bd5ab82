"""Forms of the parent pages and of the staff admin views. Each checks its input, then a view
hands the cleaned data to one service function, which checks the business rules again."""

from __future__ import annotations

from django import forms
from django.conf import settings

from payments import receipts
from payments.models import MANUAL_METHODS, PaymentMethod, PaymentRequest, School
from payments.money import MoneyError, exponent, parse_major_amount
from payments.phone import PhoneInvalid, normalize_mpesa_phone


def amount_field(label: str, currency: str, **kwargs) -> forms.CharField:
    places = exponent(currency)
    example = "450,000" if places == 0 else "1,500." + "0" * places
    return forms.CharField(
        label=f"{label} ({currency})",
        max_length=32,
        help_text=f"For example {example}",
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
        label="M-Pesa phone number",
        max_length=20,
        help_text="The phone that will receive the payment prompt, for example 0712 345 678.",
        widget=forms.TextInput(attrs={"inputmode": "tel", "autocomplete": "tel"}),
    )

    def clean_phone(self) -> str:
        try:
            return normalize_mpesa_phone(self.cleaned_data["phone"])
        except PhoneInvalid as exc:
            raise forms.ValidationError(str(exc)) from exc


class ManualPaymentForm(forms.Form):
    method = forms.ChoiceField(
        label="How did you pay?",
        choices=[(method.value, method.label) for method in MANUAL_METHODS],
        widget=forms.RadioSelect,
    )
    reference = forms.CharField(
        label="Reference",
        max_length=128,
        required=False,
        help_text="The bank or mobile-money transaction reference, or the cash receipt number.",
    )
    receipt = forms.FileField(
        label="Receipt (optional)",
        required=False,
        help_text=f"A photo or PDF of the receipt: {receipts.ACCEPTED_TYPES}.",
        widget=forms.ClearableFileInput(attrs={"accept": receipts.ACCEPT_ATTRIBUTE}),
    )

    def __init__(self, *args, payment_request: PaymentRequest, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = payment_request.currency
        self.fields["amount"] = amount_field("Amount paid", self.currency)
        self.fields["receipt"].help_text += (
            f" At most {receipts.size_text(settings.MANUAL_RECEIPT_MAX_BYTES)}."
        )
        if not self.is_bound:
            self.initial.setdefault("amount", payment_request.amount_display.split(" ", 1)[1])
        self.order_fields(["method", "amount", "reference", "receipt"])

    def clean_amount(self) -> int:
        return clean_amount(self.cleaned_data["amount"], self.currency)

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
            self.add_error("reference", "Enter the reference of your transfer.")
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
    """Staff type the amount in major units; it is stored in minor units, parsed strictly."""

    student_id = forms.CharField(label="Student number", max_length=64)
    amount = forms.CharField(label="Amount", max_length=32, help_text="In major units, e.g. 450,000 UGX or 1,500.50 KES.")
    currency = forms.CharField(label="Currency", max_length=3, required=False, help_text="Blank: the school's currency.")

    class Meta:
        model = PaymentRequest
        fields = ["school", "description", "due_date"]

    def __init__(self, *args, schools=None, **kwargs):
        super().__init__(*args, **kwargs)
        if schools is not None:
            self.fields["school"].queryset = schools
        self.order_fields(["school", "student_id", "description", "amount", "currency", "due_date"])

    def clean(self):
        from payments.services import PaymentRequestInvalid, payment_request_draft

        cleaned = super().clean()
        school = cleaned.get("school")
        if school is None:
            return cleaned
        try:
            self.draft = payment_request_draft(
                school=school,
                student_number=cleaned.get("student_id", ""),
                description=cleaned.get("description", ""),
                amount=cleaned.get("amount", ""),
                currency=cleaned.get("currency", ""),
                due_date=cleaned.get("due_date"),
            )
        except PaymentRequestInvalid as exc:
            for name, message in exc.errors.items():
                self.add_error(name if name in self.fields else None, message)
        return cleaned


class CsvImportForm(forms.Form):
    school = forms.ModelChoiceField(queryset=School.objects.none())
    file = forms.FileField(label="CSV file", widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}))

    def __init__(self, *args, schools, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["school"].queryset = schools
        if schools.count() == 1:
            self.fields["school"].initial = schools.first()


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
