"""A fake Daraja API: OAuth client-credentials token, STK Push and STK Push Query
(https://developer.safaricom.co.ke/APIs/MpesaExpressSimulate , .../MpesaExpressQuery).

It checks what Daraja checks: the Basic credentials, the bearer token, and that
``Password == base64(BusinessShortCode + passkey + Timestamp)``. Until a push is settled, the
query answers as Daraja does while the payer has not finished: HTTP 500, errorCode 500.001.1001.

Test controls: ``settle(checkout_request_id, result_code=0, receipt=...)``; ``pushes`` holds each
push with the callback URL it was given, so a test can post the callback Daraja would send.

The payer's "phone" (the demo, ``make run``): ``/phone`` lists the prompts waiting for a PIN;
"Enter PIN and pay" settles one and posts Daraja's STK callback to the ``CallBackURL`` the push
named (https://developer.safaricom.co.ke/APIs/MpesaExpressSimulate, "Callback"); "Cancel"
answers ResultCode 1032, as a payer dismissing the prompt does.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import secrets
import time

from fakes.server import FakeApp, Request, Response, form_fields, html_page, json_response, post_json


class FakeDaraja(FakeApp):
    def __init__(self, consumer_key: str = "ck_fake", consumer_secret: str = "cs_fake", passkey: str = "pk_fake") -> None:
        super().__init__()
        self.consumer_key, self.consumer_secret, self.passkey = consumer_key, consumer_secret, passkey
        self.tokens: set[str] = set()
        self.pushes: dict[str, dict] = {}
        self._ids = itertools.count(1)

    def settle(self, checkout_request_id: str, result_code: int = 0, receipt: str = "NLJ7RT61SV") -> dict:
        with self.lock:
            push = self.pushes[checkout_request_id]
            push.update(result_code=result_code, receipt=receipt if result_code == 0 else None)
            return push

    def callback_body(self, checkout_request_id: str) -> bytes:
        """The STK callback Daraja posts once the payer answered (its documented shape)."""
        push = self.pushes[checkout_request_id]
        callback = {
            "MerchantRequestID": push["merchant_request_id"], "CheckoutRequestID": checkout_request_id,
            "ResultCode": push["result_code"],
            "ResultDesc": "The service request is processed successfully." if push["result_code"] == 0 else "Request cancelled by user",
        }  # fmt: skip
        if push["result_code"] == 0:
            callback["CallbackMetadata"] = {"Item": [
                {"Name": "Amount", "Value": push["amount"]}, {"Name": "MpesaReceiptNumber", "Value": push["receipt"]},
                {"Name": "Balance"}, {"Name": "TransactionDate", "Value": int(time.strftime("%Y%m%d%H%M%S"))},
                {"Name": "PhoneNumber", "Value": int(push["phone"])},
            ]}  # fmt: skip
        return json.dumps({"Body": {"stkCallback": callback}}).encode()

    def _phone(self, request: Request) -> Response:
        if request.method == "POST":
            fields = form_fields(request)
            checkout_id = fields.get("checkout_request_id", "")
            if checkout_id not in self.pushes or self.pushes[checkout_id]["result_code"] is not None:
                return html_page(404, "M-Pesa", "<p>No such prompt waiting.</p>")
            paid = fields.get("action") == "pay"
            push = self.settle(checkout_id, result_code=0 if paid else 1032, receipt=f"FAKE{secrets.token_hex(3).upper()}")
            status = post_json(push["callback_url"], self.callback_body(checkout_id), {})
            note = "Paid" if paid else "Cancelled"
            return html_page(200, "M-Pesa", f"<p>{note}. The callback was delivered (HTTP {status}).</p><p><a href=\"phone\">Back to the phone</a></p>")
        waiting = [(key, push) for key, push in self.pushes.items() if push["result_code"] is None]
        items = "".join(
            f'<li><form method="post"><p>Pay KES {html.escape(str(push["amount"]))} from {html.escape(str(push["phone"]))}?</p>'
            f'<input type="hidden" name="checkout_request_id" value="{html.escape(key)}">'
            '<button type="submit" name="action" value="pay">Enter PIN and pay</button> '
            '<button type="submit" name="action" value="cancel">Cancel</button></form></li>'
            for key, push in waiting
        )
        body = "<p>The payer's phone (local fake of M-Pesa Express).</p>" + (f"<ul>{items}</ul>" if items else "<p>No prompt is waiting.</p>")
        return html_page(200, "M-Pesa phone", body)

    def handle(self, request: Request) -> Response:
        if request.path == "/phone" and self.public_url:
            return self._phone(request)
        if request.path == "/oauth/v1/generate" and request.method == "GET":
            expected = base64.b64encode(f"{self.consumer_key}:{self.consumer_secret}".encode()).decode()
            if request.headers.get("Authorization") != f"Basic {expected}" or request.query.get("grant_type") != ["client_credentials"]:
                return json_response(400, {"errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"})
            token = secrets.token_urlsafe(16)
            with self.lock:
                self.tokens.add(token)
            return json_response(200, {"access_token": token, "expires_in": "3599"})
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.tokens:
            return json_response(401, {"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"})
        body = request.json()
        expected_password = base64.b64encode(
            f"{body.get('BusinessShortCode')}{self.passkey}{body.get('Timestamp')}".encode()
        ).decode()
        if body.get("Password") != expected_password:
            return json_response(400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid Password"})
        if request.path == "/mpesa/stkpush/v1/processrequest" and request.method == "POST":
            n = next(self._ids)
            checkout_id = f"ws_CO_15012025102115{n:06d}"
            merchant_id = f"29115-34620561-{n}"
            with self.lock:
                self.pushes[checkout_id] = {
                    "merchant_request_id": merchant_id,
                    "amount": body.get("Amount"),
                    "phone": body.get("PhoneNumber"),
                    "callback_url": body.get("CallBackURL"),
                    "result_code": None,
                    "receipt": None,
                }
            return json_response(
                200,
                {"MerchantRequestID": merchant_id, "CheckoutRequestID": checkout_id, "ResponseCode": "0",
                 "ResponseDescription": "Success. Request accepted for processing",
                 "CustomerMessage": "Success. Request accepted for processing"},
            )
        if request.path == "/mpesa/stkpushquery/v1/query" and request.method == "POST":
            push = self.pushes.get(body.get("CheckoutRequestID", ""))
            if push is None:
                return json_response(400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid CheckoutRequestID"})
            if push["result_code"] is None:
                return json_response(500, {"requestId": "fake", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"})
            return json_response(
                200,
                {"ResponseCode": "0", "ResponseDescription": "The service request has been accepted successsfully",
                 "MerchantRequestID": push["merchant_request_id"], "CheckoutRequestID": body["CheckoutRequestID"],
                 "ResultCode": str(push["result_code"]),
                 "ResultDesc": "The service request is processed successfully." if push["result_code"] == 0 else "Request cancelled by user"},
            )
        return json_response(404, {"errorCode": "404.001.01", "errorMessage": "Resource not found"})


# What the development server (fakes/app.py, `make run`) mounts at /mpesa, with its demo keys.
FAKE = FakeDaraja
