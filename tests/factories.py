from datetime import date

import factory

from payments.models import AggregatorAccount, Payment, PaymentRequest, School, Student
from payments.state import PaymentStatus


class SchoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = School
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"school{n}")
    name = factory.LazyAttribute(lambda o: f"School {o.code}")
    currency = "UGX"


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AggregatorAccount

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

    account = factory.SubFactory(AccountFactory)
    school = factory.SelfAttribute("account.school")
    provider = factory.SelfAttribute("account.provider")
    external_txn_id = factory.Sequence(lambda n: f"txn-{n}")
    amount_minor = 100_000
    currency = "UGX"
    status = PaymentStatus.PENDING


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
