"""Prints each message instead of sending it: the development backend, like Django's console
email backend."""

from __future__ import annotations

import sys
import threading
import uuid

from payments.sms import BaseSmsBackend, SmsMessage, SmsSent

_lock = threading.Lock()


class ConsoleSmsBackend(BaseSmsBackend):
    stream = None  # sys.stdout, looked up at send time (tests capture it)

    def send(self, message: SmsMessage) -> SmsSent:
        stream = self.stream or sys.stdout
        message_id = f"console-{uuid.uuid4().hex[:12]}"
        with _lock:
            stream.write(f"SMS to {message.to} ({message_id}):\n{message.body}\n{'-' * 79}\n")
            stream.flush()
        return SmsSent(message_id)
