"""Africa's Talking's SMS API, behind ``BaseSmsBackend``.

https://developers.africastalking.com/docs/sms/sending/bulk — ``POST /version1/messaging``,
form-encoded ``username``, ``to`` (comma-separated, international format), ``message`` and the
optional ``from`` (a registered sender id or short code), the key in an ``apiKey`` header and
``Accept: application/json``. A taken request answers 201 with
``{"SMSMessageData": {"Message": ..., "Recipients": [{"statusCode", "number", "status",
"cost", "messageId"}]}}``; each recipient's ``statusCode`` says what became of it: 100
Processed, 101 Sent, 102 Queued; 401 RiskHold, 402 InvalidSenderId, 403 InvalidPhoneNumber,
404 UnsupportedNumberType, 405 InsufficientBalance, 406 UserInBlacklist, 407 CouldNotRoute,
409 DoNotDisturbRejection; 500 InternalServerError, 501 GatewayError, 502 RejectedByGateway.
A wrong key is answered 401, a missing field 400, both as plain text.
"""

from __future__ import annotations

import httpx
from django.conf import settings

from payments.sms import BaseSmsBackend, SmsInDoubt, SmsMessage, SmsNotSent, SmsRefused, SmsSent

ACCEPTED = {100, 101, 102}
# The gateway's own trouble, not this message's: nothing was sent, another try may pass.
TRANSIENT = {500, 501, 502}


class AfricasTalkingSmsBackend(BaseSmsBackend):
    def __init__(self) -> None:
        self.url = settings.AFRICASTALKING_API_URL
        self.username = settings.AFRICASTALKING_USERNAME
        self.api_key = settings.AFRICASTALKING_API_KEY
        self.sender_id = settings.AFRICASTALKING_SENDER_ID
        self.timeout = httpx.Timeout(settings.SMS_TIMEOUT_SECONDS)

    def send(self, message: SmsMessage) -> SmsSent:
        if not (self.username and self.api_key):
            raise SmsRefused("Africa's Talking is not configured (AFRICASTALKING_USERNAME, AFRICASTALKING_API_KEY).")
        form = {"username": self.username, "to": message.to, "message": message.body}
        if self.sender_id:
            form["from"] = self.sender_id
        headers = {"apiKey": self.api_key, "Accept": "application/json"}
        try:
            response = httpx.post(self.url, data=form, headers=headers, timeout=self.timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise SmsNotSent(f"Africa's Talking could not be reached: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            # The request may have arrived: a second one could send the message twice.
            raise SmsInDoubt(f"Africa's Talking's answer was lost: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise SmsNotSent(f"Africa's Talking answered {response.status_code}")
        if response.status_code == 401:
            raise SmsRefused("Africa's Talking refused the API key (401)")
        if response.status_code not in (200, 201):
            raise SmsRefused(f"Africa's Talking refused the request ({response.status_code}): {response.text[:200]}")
        try:
            recipients = response.json()["SMSMessageData"]["Recipients"]
            recipient = recipients[0]
            code = int(recipient["statusCode"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # Taken (2xx) but unreadable: it may have been sent.
            raise SmsInDoubt(f"Africa's Talking's answer could not be read: {response.text[:200]}") from exc
        status = str(recipient.get("status", ""))
        if code in ACCEPTED:
            return SmsSent(str(recipient.get("messageId", "")))
        if code in TRANSIENT:
            raise SmsNotSent(f"Africa's Talking: {status} ({code})")
        raise SmsRefused(f"Africa's Talking: {status} ({code})")
