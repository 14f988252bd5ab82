"""A fake of Africa's Talking's SMS API (``POST /version1/messaging``), as strict as its
documentation: https://developers.africastalking.com/docs/sms/sending/bulk

Refused as the real API refuses them: another method or path (404), a missing or wrong
``apiKey`` header (401, plain text), a body that is not form-encoded or lacks ``username``,
``to`` or ``message`` (400, plain text), a ``username`` that is not the key's (401). Per
recipient, in a 201 answer: a number not in international format (``+`` and 7 to 15 digits)
is ``403 InvalidPhoneNumber``, a ``from`` the account has not registered ``402
InvalidSenderId``, a blacklisted number ``406 UserInBlacklist``, no balance left ``405
InsufficientBalance``. Without ``Accept: application/json`` it answers XML, as the API does.

Test controls: ``fail_next(n, status)`` (the next n sends answer that HTTP status),
``fail_recipients_next(n, code)`` (the next n sends answer 201 with that recipient statusCode,
e.g. 500 InternalServerError), ``delay_seconds`` (to make the client time out), ``blacklist``,
``balance_messages``; ``sent`` lists the messages taken.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from fakes.server import FakeApp, Request, Response, json_response

DEMO_USERNAME = "sandbox"
DEMO_API_KEY = "demo-africastalking-key"

_STATUS = {
    101: "Success",
    402: "InvalidSenderId",
    403: "InvalidPhoneNumber",
    405: "InsufficientBalance",
    406: "UserInBlacklist",
    500: "InternalServerError",
    501: "GatewayError",
    502: "RejectedByGateway",
}
_INTERNATIONAL = re.compile(r"^\+\d{7,15}$")


@dataclass(frozen=True)
class SentSms:
    message_id: str
    to: str
    body: str
    sender: str


def _text(status: int, body: str) -> Response:
    return status, {"Content-Type": "text/plain"}, body.encode()


class FakeAfricasTalking(FakeApp):
    def __init__(
        self, *, username: str = DEMO_USERNAME, api_key: str = DEMO_API_KEY, sender_ids: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.username = username
        self.api_key = api_key
        self.sender_ids = set(sender_ids)
        self.blacklist: set[str] = set()
        self.balance_messages: int | None = None
        self.delay_seconds = 0.0
        self.sent: list[SentSms] = []
        self._http_failures: list[int] = []
        self._recipient_failures: list[int] = []

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self._http_failures.extend([status] * count)

    def fail_recipients_next(self, count: int, code: int = 500) -> None:
        with self.lock:
            self._recipient_failures.extend([code] * count)

    def handle(self, request: Request) -> Response:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        if request.method != "POST" or request.path != "/version1/messaging":
            return _text(404, "Not Found")
        if request.headers.get("Apikey") != self.api_key:
            return _text(401, "The supplied authentication is invalid")
        with self.lock:
            failure = self._http_failures.pop(0) if self._http_failures else None
        if failure:
            return _text(failure, "Service temporarily unavailable")
        if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return _text(400, "Request body must be application/x-www-form-urlencoded")
        try:
            form = {key: values[0] for key, values in parse_qs(request.body.decode(), strict_parsing=True).items()}
        except (UnicodeDecodeError, ValueError):
            return _text(400, "Request body could not be parsed")
        for name in ("username", "to", "message"):
            if not form.get(name, "").strip():
                return _text(400, f"Request is missing required form field '{name}'")
        if form["username"] != self.username:
            return _text(401, "The supplied authentication is invalid")
        sender = form.get("from", "")
        recipients = []
        for number in [item.strip() for item in form["to"].split(",")]:
            recipients.append(self._recipient(number, form["message"], sender))
        taken = [item for item in recipients if item["statusCode"] == 101]
        summary = f"Sent to {len(taken)}/{len(recipients)} Total Cost: KES {0.8 * len(taken):.4f}"
        body = {"SMSMessageData": {"Message": summary, "Recipients": recipients}}
        if "application/json" not in request.headers.get("Accept", ""):
            xml = f"<AfricasTalkingResponse><SMSMessageData><Message>{summary}</Message></SMSMessageData></AfricasTalkingResponse>"
            return 201, {"Content-Type": "application/xml"}, xml.encode()
        return json_response(201, body)

    def _recipient(self, number: str, message: str, sender: str) -> dict:
        with self.lock:
            code = self._recipient_failures.pop(0) if self._recipient_failures else 101
            if code == 101:
                if not _INTERNATIONAL.fullmatch(number):
                    code = 403
                elif sender and sender not in self.sender_ids:
                    code = 402
                elif number in self.blacklist:
                    code = 406
                elif self.balance_messages is not None and self.balance_messages <= 0:
                    code = 405
            if code != 101:
                return {"statusCode": code, "number": number, "status": _STATUS.get(code, "Failed"), "cost": "0", "messageId": "None"}
            if self.balance_messages is not None:
                self.balance_messages -= 1
            message_id = f"ATXid_{len(self.sent) + 1:08d}"
            self.sent.append(SentSms(message_id, number, message, sender))
        return {"statusCode": 101, "number": number, "status": "Success", "cost": "KES 0.8000", "messageId": message_id}
