"""The domain: schools, staff memberships, provider accounts, students, payment requests,
payments, webhook events, audit log.

Duplicates are made impossible by unique constraints, not by checks before insert:
one webhook event per (account, provider event id), one payment per (account, provider
transaction id).
"""

from payments.models.money import (
    MANUAL_METHODS,
    MANUAL_PROVIDER,
    Payment,
    PaymentMethod,
    PaymentRequest,
    RefundRequest,
    ReviewFlag,
    TransactionFact,
    new_pay_token,
    receipt_upload_to,
)
from payments.models.notices import Notice, PaymentReceipt, new_receipt_token
from payments.models.outbox import OutboxEvent
from payments.models.parents import ParentAccessLink
from payments.models.records import AuditLog, WebhookEvent
from payments.models.schools import (
    CURRENCY_CHOICES,
    MappingStatus,
    ProviderAccount,
    ProviderStudentLink,
    School,
    StaffMembership,
    Student,
    validate_currency,
)

__all__ = [
    "AuditLog",
    "CURRENCY_CHOICES",
    "MANUAL_METHODS",
    "MANUAL_PROVIDER",
    "ParentAccessLink",
    "MappingStatus",
    "Notice",
    "OutboxEvent",
    "Payment",
    "PaymentMethod",
    "PaymentReceipt",
    "PaymentRequest",
    "ProviderAccount",
    "ProviderStudentLink",
    "RefundRequest",
    "ReviewFlag",
    "School",
    "StaffMembership",
    "Student",
    "TransactionFact",
    "WebhookEvent",
    "new_pay_token",
    "new_receipt_token",
    "receipt_upload_to",
    "validate_currency",
]
