"""API shapes. Amounts go out as integer minor units plus the ISO currency and a formatted
display string; they come in as a string in major units (``"450,000"``) or as ``amount_minor``."""

from __future__ import annotations

from rest_framework import serializers

from payments.models import Notice, Payment, PaymentRequest, RefundRequest


class PaymentRequestSerializer(serializers.ModelSerializer):
    school = serializers.CharField(source="school.code", read_only=True)
    student_id = serializers.CharField(source="student.student_number", read_only=True)
    student_name = serializers.CharField(source="student.full_name", read_only=True)
    amount_display = serializers.CharField(read_only=True)
    pay_url = serializers.CharField(read_only=True)
    paid_payment_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = PaymentRequest
        fields = [
            "id",
            "school",
            "student_id",
            "student_name",
            "description",
            "amount_minor",
            "currency",
            "amount_display",
            "due_date",
            "parent_email",
            "parent_phone",
            "status",
            "pay_url",
            "paid_payment_id",
            "paid_at",
            "created_at",
        ]
        read_only_fields = fields


class PaymentRequestCreateSerializer(serializers.Serializer):
    school = serializers.CharField(
        required=False, help_text="School code; needed only when you are staff of several schools."
    )
    student_id = serializers.CharField(max_length=64, help_text="The school's student number.")
    description = serializers.CharField(max_length=200)
    amount = serializers.CharField(
        required=False, max_length=32, help_text='In major units, e.g. "450,000" (UGX) or "1,500.50" (KES).'
    )
    amount_minor = serializers.IntegerField(required=False, help_text="Or: in minor units, e.g. 150050 for KES 1,500.50.")
    currency = serializers.CharField(required=False, max_length=3, help_text="ISO 4217; default: the school's.")
    due_date = serializers.DateField(required=False, allow_null=True)
    parent_email = serializers.CharField(
        required=False, allow_blank=True, max_length=254, help_text="Optional: the payer's email (Paystack and Flutterwave need one)."
    )
    parent_phone = serializers.CharField(required=False, allow_blank=True, max_length=20, help_text="Optional: the payer's phone.")


class CheckoutRequestSerializer(serializers.Serializer):
    provider = serializers.CharField(max_length=32, help_text="A provider slug enabled for the school, e.g. dummy.")
    phone = serializers.CharField(
        required=False, max_length=20, help_text="The payer's phone, for on-phone prompts (M-Pesa)."
    )
    email = serializers.CharField(
        required=False,
        max_length=254,
        help_text="The payer's email address. Paystack and Flutterwave need one; the request's parent_email is used when absent.",
    )


class CheckoutResponseSerializer(serializers.Serializer):
    checkout_url = serializers.CharField(allow_null=True, help_text="Send the payer here; null for a phone prompt.")
    payment_id = serializers.UUIDField()
    status = serializers.CharField()
    reused = serializers.BooleanField(help_text="True when a checkout already under way was returned.")
    prompt_sent = serializers.BooleanField()
    thanks_url = serializers.CharField(help_text="The page that shows the payer the outcome.")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    payment_id = serializers.UUIDField(required=False)


class PaymentSerializer(serializers.ModelSerializer):
    school = serializers.CharField(source="school.code", read_only=True)
    student_id = serializers.CharField(source="student.student_number", read_only=True, allow_null=True)
    amount_display = serializers.CharField(read_only=True)
    payment_request_id = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = Payment
        fields = [
            "id",
            "school",
            "payment_request_id",
            "provider",
            "method",
            "reference",
            "external_txn_id",
            "amount_minor",
            "currency",
            "amount_display",
            "refunded_amount_minor",
            "refund_pending_amount_minor",
            "status",
            "status_changed_at",
            "review_flag",
            "review_flag_reason",
            "manual_reference",
            "student_id",
            "mapping_status",
            "risk_score",
            "risk_flagged",
            "risk_reasons",
            "created_at",
        ]
        read_only_fields = fields


class RefundCreateSerializer(serializers.Serializer):
    amount = serializers.CharField(
        required=False, max_length=32, help_text='In major units of the payment\'s currency, e.g. "120,000".'
    )
    amount_minor = serializers.IntegerField(required=False, help_text="Or: in minor units.")
    reason = serializers.CharField(max_length=500, help_text="Why the money goes back (kept in the audit log).")


class RefundRequestSerializer(serializers.ModelSerializer):
    payment_id = serializers.UUIDField(read_only=True)
    amount_display = serializers.CharField(read_only=True)
    requested_by = serializers.CharField(source="requested_by_name", read_only=True)

    class Meta:
        model = RefundRequest
        fields = [
            "id",
            "payment_id",
            "method",
            "amount_minor",
            "currency",
            "amount_display",
            "reason",
            "status",
            "provider_refund_id",
            "error",
            "requested_by",
            "created_at",
            "submitted_at",
            "finished_at",
        ]
        read_only_fields = fields


class RefundErrorSerializer(ErrorSerializer):
    refund = RefundRequestSerializer(required=False, help_text="The refund, when one was recorded.")


class NoticeSendSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Notice.Channel.values)


class NoticeSerializer(serializers.ModelSerializer):
    payment_request_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = Notice
        fields = [
            "id", "payment_request_id", "kind", "channel", "recipient", "status", "attempts", "last_error",
            "created_at", "sent_at",
        ]  # fmt: skip
        read_only_fields = fields


class NoticeErrorSerializer(ErrorSerializer):
    notice = NoticeSerializer(required=False)
