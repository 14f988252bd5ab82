"""A parent's own history: a magic link emailed (through a real SMTP server) to the address on the
school's payment requests shows every request, payment and receipt of their children at that
school and nothing else; links expire; the REST API answers the same for the link's token."""

from __future__ import annotations

import email
import email.policy
import re
import threading
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone
from rest_framework.test import APIClient

from core.status import PaymentStatus as S
from payments.models import AuditLog, ParentAccessLink
from payments.services import parents
from tests.conftest import free_port
from tests.factories import AccountFactory, PaymentFactory, PaymentRequestFactory, SchoolFactory, StudentFactory

pytestmark = pytest.mark.django_db

PARENT = "Parent.One@Example.org"


class Inbox:
    def __init__(self):
        self.messages, self.lock, self.refuse = [], threading.Lock(), set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's hook
        if address in self.refuse:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook
        with self.lock:
            self.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content, policy=email.policy.default)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp(settings):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "Nile Gardens School <bursar@nilegardens.example>"
    settings.PUBLIC_BASE_URL = "https://pay.example.org"
    settings.RATELIMIT_ENABLE = False
    yield inbox
    controller.stop()


@pytest.fixture
def family(school):
    """Two children of one parent at school ng, a stranger's child there, and the same parent's
    child at another school."""
    account = AccountFactory(school=school, provider="dummy", webhook_secret="d-secret")
    amina, baraka = StudentFactory(school=school, student_number="STU-1"), StudentFactory(school=school, student_number="STU-2")
    stranger = StudentFactory(school=school, student_number="STU-9")
    term1 = PaymentRequestFactory(school=school, student=amina, parent_email="parent.one@example.org", description="Term 1")
    trip = PaymentRequestFactory(school=school, student=baraka, parent_email=PARENT, description="Trip")
    theirs = PaymentRequestFactory(school=school, student=stranger, parent_email="other@example.org", description="Theirs")
    paid = PaymentFactory(account=account, payment_request=term1, student=amina, status=S.SUCCEEDED, reference="PAID1")
    # A payment for the child that came without a pay link (a paybill, say): theirs to see too.
    direct = PaymentFactory(account=account, student=baraka, status=S.SUCCEEDED, reference="DIRECT1")
    stranger_paid = PaymentFactory(account=account, payment_request=theirs, student=stranger, status=S.SUCCEEDED, reference="THEIRS1")
    elsewhere = SchoolFactory(code="kla", name="Kampala Hill School", currency="UGX")
    PaymentRequestFactory(school=elsewhere, parent_email=PARENT, description="Elsewhere")
    return {"term1": term1, "trip": trip, "paid": paid, "direct": direct, "stranger_paid": stranger_paid, "theirs": theirs}


def ask(client, email_address, school="ng"):
    return client.post(f"/parents/{school}/", {"email": email_address})


def sent_link(smtp) -> str:
    (rcpt, message), = smtp.messages
    return re.search(r"https://pay\.example\.org(/parents/history/[^/\s]+/)", message.get_content()).group(1)


def test_a_parent_gets_a_link_by_email_and_sees_only_their_childrens_records(client, smtp, family):
    response = ask(client, " parent.one@EXAMPLE.org ")
    assert response.status_code == 200 and b'data-testid="parent-sent"' in response.content
    link = ParentAccessLink.objects.get()
    assert (link.contact, link.sent_at, bool(link.token_to_send)) == ("parent.one@example.org", None, True)
    assert parents.parent_link_send(link_id=link.pk) == "sent"
    (rcpt, message), = smtp.messages
    assert rcpt == ["parent.one@example.org"] and message["Subject"] == "Your payments at Nile Gardens School"
    link.refresh_from_db()
    assert link.sent_at is not None and link.token_to_send == ""  # only the digest is kept
    page = client.get(sent_link(smtp))
    assert page.status_code == 200 and page["Referrer-Policy"] == "no-referrer"
    html = page.content.decode()
    assert "Term 1" in html and "Trip" in html and "PAID1" in html and "DIRECT1" in html
    assert "Theirs" not in html and "THEIRS1" not in html and "Elsewhere" not in html
    assert f'/payments/{family["paid"].pk}/thanks' in html  # the receipt
    assert AuditLog.objects.get(action="parent_link.requested").target_id == str(link.pk)


def test_an_unknown_address_gets_the_same_answer_and_no_email(client, smtp, family):
    known, unknown = ask(client, PARENT), ask(client, "nobody@example.org")
    assert (unknown.status_code, unknown.content) == (known.status_code, known.content)
    assert ParentAccessLink.objects.count() == 1


def test_a_bad_address_is_told(client, smtp, family):
    response = ask(client, "not-an-address")
    assert response.status_code == 400
    assert b"Enter the email address or phone number the school sends your payment links to." in response.content
    response = ask(client, "not@an address")
    assert response.status_code == 400 and b"Enter the email address the school sends your payment links to." in response.content
    assert not ParentAccessLink.objects.exists()


def test_links_expire(client, smtp, family, settings):
    ask(client, PARENT)
    link = ParentAccessLink.objects.get()
    parents.parent_link_send(link_id=link.pk)
    url = sent_link(smtp)
    ParentAccessLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    gone = client.get(url)
    assert gone.status_code == 410 and b"/parents/ng/" in gone.content and b"Term 1" not in gone.content
    assert client.get("/parents/history/not-a-token/").status_code == 404


def test_a_link_not_sent_before_it_expired_is_not_sent(smtp, family):
    link = parents.parent_link_request(school=family["term1"].school, contact=PARENT)
    ParentAccessLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert parents.parent_link_send(link_id=link.pk) == "expired" and smtp.messages == []


def test_sending_is_idempotent_and_a_refused_address_is_not_retried(smtp, family):
    link = parents.parent_link_request(school=family["term1"].school, contact=PARENT)
    assert parents.parent_link_send(link_id=link.pk) == "sent"
    assert parents.parent_link_send(link_id=link.pk) == "nothing to send" and len(smtp.messages) == 1
    smtp.refuse.add("parent.one@example.org")
    refused = parents.parent_link_request(school=family["term1"].school, contact=PARENT)
    assert parents.parent_link_send(link_id=refused.pk) == "refused"
    refused.refresh_from_db()
    assert refused.send_error.startswith("refused:") and refused.token_to_send == ""


def test_a_mail_server_down_is_retried(family, settings):
    from core.errors import TransientError

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens
    link = parents.parent_link_request(school=family["term1"].school, contact=PARENT)
    with pytest.raises(TransientError, match="mail server unavailable"):
        parents.parent_link_send(link_id=link.pk)
    link.refresh_from_db()
    assert link.sent_at is None and link.token_to_send  # kept for the retry


def test_asking_too_often_makes_no_more_links(client, smtp, family):
    for _ in range(5):
        assert ask(client, PARENT).status_code == 200
    assert ParentAccessLink.objects.count() == parents.MAX_LINKS_PER_HOUR


def test_an_unknown_school_is_404(client, smtp):
    assert client.get("/parents/nowhere/").status_code == 404


def test_the_api_answers_the_same_for_the_links_token(client, smtp, family):
    ask(client, PARENT)
    link = ParentAccessLink.objects.get()
    parents.parent_link_send(link_id=link.pk)
    token = sent_link(smtp).split("/")[3]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Parent {token}")
    body = api.get("/api/parent/history/").json()
    assert body["school"] == {"code": "ng", "name": "Nile Gardens School"}
    assert [s["student_id"] for s in body["students"]] == ["STU-1", "STU-2"]
    assert sorted(r["description"] for r in body["payment_requests"]) == ["Term 1", "Trip"]
    assert sorted(p["reference"] for p in body["payments"]) == ["DIRECT1", "PAID1"]
    paid = next(p for p in body["payments"] if p["reference"] == "PAID1")
    assert paid["receipt_url"] == f"http://testserver/payments/{family['paid'].pk}/thanks"
    assert paid["amount_minor"] == family["paid"].amount_minor
    ParentAccessLink.objects.filter(pk=link.pk).update(expires_at=timezone.now())
    expired = api.get("/api/parent/history/")
    assert (expired.status_code, expired.json()) == (401, {"detail": "This link has expired: ask for a new one", "code": "parent_token_expired"})


@pytest.mark.parametrize(("header", "expected"), [
    (None, {"detail": "Send Authorization: Parent <the token of your link>", "code": "parent_token_missing"}),
    ("Token abc", {"detail": "Send Authorization: Parent <the token of your link>", "code": "parent_token_missing"}),
    ("Parent wrong-token", {"detail": "Unknown token", "code": "parent_token_invalid"}),
])  # fmt: skip
def test_the_api_refuses_without_a_valid_token(header, expected):
    api = APIClient()
    if header:
        api.credentials(HTTP_AUTHORIZATION=header)
    response = api.get("/api/parent/history/")
    assert (response.status_code, response.json(), response["WWW-Authenticate"]) == (401, expected, "Parent")


# --- By SMS: the phone number on the school's requests, however staff typed it ----------------


@pytest.fixture
def texts(settings):
    from payments import sms

    settings.SMS_BACKEND = "payments.sms.locmem.LocmemSmsBackend"
    settings.PUBLIC_BASE_URL = "https://pay.example.org"
    settings.RATELIMIT_ENABLE = False
    sms.outbox.clear()
    yield sms.outbox
    sms.outbox.clear()


def test_a_parent_known_by_phone_gets_the_link_by_sms_and_sees_their_childrens_records(client, texts, family):
    family["trip"].parent_phone = "0772 123 456"  # typed the national way on the request
    family["trip"].save(update_fields=["parent_phone"])

    response = ask(client, "+256 772 123456")
    assert response.status_code == 200 and b'data-testid="parent-sent"' in response.content
    link = ParentAccessLink.objects.get()
    assert link.contact == "+256772123456"
    assert parents.parent_link_send(link_id=link.pk) == "sent"
    (message,) = texts
    assert message.to == "+256772123456"
    url = re.search(r"https://pay\.example\.org(/parents/history/[^/\s]+/)", message.body).group(1)
    html = client.get(url).content.decode()
    assert "Trip" in html and "DIRECT1" in html
    assert "Term 1" not in html and "Theirs" not in html and "THEIRS1" not in html
    assert parents.parent_link_send(link_id=link.pk) == "nothing to send" and len(texts) == 1


def test_an_unknown_phone_gets_the_same_answer_and_no_text(client, texts, family):
    family["trip"].parent_phone = "0772 123 456"
    family["trip"].save(update_fields=["parent_phone"])
    known, unknown = ask(client, "0772123456"), ask(client, "0772 999 999")
    assert (unknown.status_code, unknown.content) == (known.status_code, known.content)
    assert ParentAccessLink.objects.count() == 1 and texts == []


@pytest.mark.parametrize(
    ("error", "outcome", "kept"),
    [("SmsRefused", "refused", False), ("SmsInDoubt", "in doubt", False), ("SmsNotSent", None, True)],
)
def test_an_sms_refusal_or_lost_answer_is_not_retried_an_outage_is(texts, family, monkeypatch, error, outcome, kept):
    from core.errors import TransientError
    from payments import sms

    family["trip"].parent_phone = "+256772123456"
    family["trip"].save(update_fields=["parent_phone"])
    link = parents.parent_link_request(school=family["trip"].school, contact="0772123456")

    def failing_send(self, message):
        raise getattr(sms, error)("the gateway said no")

    monkeypatch.setattr(sms.locmem.LocmemSmsBackend, "send", failing_send)
    if outcome is None:
        with pytest.raises(TransientError):
            parents.parent_link_send(link_id=link.pk)
    else:
        assert parents.parent_link_send(link_id=link.pk) == outcome
    link.refresh_from_db()
    assert link.sent_at is None and bool(link.token_to_send) is kept
