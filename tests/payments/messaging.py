"""Real servers for messages to parents: an SMTP server (aiosmtpd) and the fake Africa's Talking
SMS API, each on a real socket, with the settings pointing at them."""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller

from fakes.africastalking import FakeAfricasTalking
from fakes.server import serve_in_thread
from tests.conftest import free_port

AT_USERNAME = "nilegardens"
AT_KEY = "at-test-key-0001"
AT_SENDER = "NILEGARDEN"


@dataclass
class SmtpInbox:
    """What the SMTP server received, and its test controls."""

    messages: list = field(default_factory=list)
    refuse_recipients: dict[str, str] = field(default_factory=dict)  # address -> SMTP reply
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's hook name
        if address in self.refuse_recipients:
            return self.refuse_recipients[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((envelope.rcpt_tos, message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list:
        with self.lock:
            return [message for rcpt, message in self.messages if address in rcpt]


@pytest.fixture
def smtp_server(settings):
    inbox = SmtpInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_TIMEOUT = 2
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "Nile Gardens School <bursar@nilegardens.example>"
    settings.EMAIL_MESSAGE_ID_DOMAIN = "pay.example.org"
    yield inbox
    controller.stop()


@pytest.fixture
def sms_gateway(settings):
    fake = FakeAfricasTalking(username=AT_USERNAME, api_key=AT_KEY, sender_ids=(AT_SENDER,))
    server = serve_in_thread(fake)
    settings.SMS_BACKEND = "payments.sms.africastalking.AfricasTalkingSmsBackend"
    settings.AFRICASTALKING_API_URL = f"{server.base_url}/version1/messaging"
    settings.AFRICASTALKING_USERNAME = AT_USERNAME
    settings.AFRICASTALKING_API_KEY = AT_KEY
    settings.AFRICASTALKING_SENDER_ID = AT_SENDER
    settings.SMS_TIMEOUT_SECONDS = 2
    yield fake
    server.stop()
