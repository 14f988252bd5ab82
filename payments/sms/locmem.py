"""Keeps each message in ``payments.sms.outbox``: for tests that do not need the wire."""

from __future__ import annotations

from payments import sms
from payments.sms import BaseSmsBackend, SmsMessage, SmsSent


class LocmemSmsBackend(BaseSmsBackend):
    def send(self, message: SmsMessage) -> SmsSent:
        sms.outbox.append(message)
        return SmsSent(f"locmem-{len(sms.outbox)}")
