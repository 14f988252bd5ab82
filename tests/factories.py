import uuid
from datetime import date

import factory
from django.db import transaction
from django.utils import timezone

from core.status import PaymentStatus
from payments.ledger import FactKind, FactSource
from payments.models import Payment, PaymentRequest, ProviderAccount, School, Student, TransactionFact
from payments.state import SETTLED_STATES
from providers.base import DisputeReport, NormalizedEvent, RefundReport


class SchoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = School
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"school{n}")
    name = factory.LazyAttribute(lambda o: f"School {o.code}")
    currency = "UGX"


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderAccount

    school = factory.SubFactory(SchoolFactory)
    provider = "surepay"
    webhook_secret = "sekret"


class StudentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Student

    school = factory.SubFactory(SchoolFactory)
    student_number = factory.Sequence(lambda n: f"STU-{n:04d}")
    full_name = factory.Faker("name")


class PaymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payment
        skip_postgeneration_save = True

    account = factory.SubFactory(AccountFactory)
    school = factory.SelfAttribute("account.school")
    provider = factory.SelfAttribute("account.provider")
    external_txn_id = factory.Sequence(lambda n: f"txn-{n}")
    amount_minor = 100_000
    currency = "UGX"
    status = PaymentStatus.PENDING

    @factory.post_generation
    def ledger(payment, create, extracted, **kwargs):
        """A payment's state is folded from its facts: give a payment made in a given state the
        facts that state stands for (as the ledger migration does), so the ledger agrees."""
        if not create:
            return
        common = {
            "payment": payment, "school_id": payment.school_id, "account_id": payment.account_id,
            "occurred_at": payment.status_changed_at, "source": FactSource.SYSTEM, "currency": payment.currency,
        }  # fmt: skip
        settled = payment.status in SETTLED_STATES
        if payment.status not in (PaymentStatus.PENDING, PaymentStatus.AWAITING_REVIEW):
            TransactionFact.objects.create(
                kind=FactKind.CHARGE,
                status=PaymentStatus.SUCCEEDED if settled else payment.status,
                amount_minor=payment.amount_minor if settled else None,
                **common,
            )
        if payment.refunded_amount_minor:
            TransactionFact.objects.create(kind=FactKind.REFUNDED_TOTAL, amount_minor=payment.refunded_amount_minor, **common)
        if settled and payment.settled_at is None:
            Payment.objects.filter(pk=payment.pk).update(settled_at=payment.status_changed_at)
            payment.settled_at = payment.status_changed_at


def report(
    payment, *, status=None, amount_minor=None, refunds=(), refunded_total_minor=None, disputes=(), event_id="",
    external_txn_id=None,
):  # fmt: skip
    """What the payment's provider reports in a signed webhook, applied through the real service
    (``payment_event_apply``). ``refunds``: (key, amount[, status]) tuples; ``disputes``:
    (key, amount, status) tuples."""
    from payments.services import payment_event_apply

    event = NormalizedEvent(
        event_id=event_id or f"evt-{uuid.uuid4().hex[:12]}",
        event_type="test.report",
        status=status,
        external_txn_id=external_txn_id or payment.external_txn_id or "",
        reference=payment.reference or "",
        amount_minor=payment.amount_minor if amount_minor is None else amount_minor,
        currency=payment.currency,
        refunds=tuple(RefundReport(*refund) for refund in refunds),
        refunded_total_minor=refunded_total_minor,
        disputes=tuple(DisputeReport(*dispute) for dispute in disputes),
        occurred_at=timezone.now(),
    )
    with transaction.atomic():
        change = payment_event_apply(account=payment.account, event=event)
    if not payment._state.adding:  # an unsaved payment stands for one the provider has and we do not
        payment.refresh_from_db()
    return change


class PaymentRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentRequest

    school = factory.SubFactory(SchoolFactory)
    student = factory.SubFactory(StudentFactory, school=factory.SelfAttribute("..school"))
    description = "Term 1 fees"
    amount_minor = 450_000
    currency = factory.SelfAttribute("school.currency")


class PaymentSyncFactory(factory.django.DjangoModelFactory):
    """A payment's QuickBooks sync record in a given state (no QuickBooks call is made)."""

    class Meta:
        model = "quickbooks_sync.QboPaymentSync"

    payment = factory.SubFactory(PaymentFactory, status=PaymentStatus.SUCCEEDED)
    school = factory.SelfAttribute("payment.school")
    txn_date = factory.LazyFunction(date.today)
    amount_minor = factory.SelfAttribute("payment.amount_minor")
    currency = factory.SelfAttribute("payment.currency")
