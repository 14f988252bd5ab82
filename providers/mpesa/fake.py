"""A fake Daraja API: OAuth client-credentials token, STK Push and STK Push Query
(https://developer.safaricom.co.ke/APIs/MpesaExpressSimulate , .../MpesaExpressQuery), and for
paybills C2B Register URL (v2) and Transaction Status (.../CustomerToBusinessRegisterURL,
.../TransactionStatus).

It checks what Daraja checks: the Basic credentials, the bearer token, and that
``Password == base64(BusinessShortCode + passkey + Timestamp)``. Until a push is settled, the
query answers as Daraja does while the payer has not finished: HTTP 500, errorCode 500.001.1001.
Register URL refuses a ``ResponseType`` other than Completed or Cancelled, URLs that are not
https, and URLs with the words Daraja bans (M-Pesa, Safaricom, exe, exec, cmd, SQL, query).
Transaction Status refuses a wrong initiator or security credential, a CommandID other than
TransactionStatusQuery and a missing ResultURL or QueueTimeOutURL; its answer is asynchronous.

Test controls: ``settle(checkout_request_id, result_code=0, receipt=...)``; ``pushes`` holds each
push with the callback URL it was given, so a test can post the callback Daraja would send.

The payer's "phone" (the demo, ``make run``): ``/phone`` lists the prompts waiting for a PIN;
"Enter PIN and pay" settles one and posts Daraja's STK callback to the ``CallBackURL`` the push
named (https://developer.safaricom.co.ke/APIs/MpesaExpressSimulate, "Callback"); "Cancel"
answers ResultCode 1032, as a payer dismissing the prompt does.
``pay_bill(...)`` makes a paybill payment and returns the confirmation Daraja would send;
``status_queries`` holds each Transaction Status query, and ``status_result(receipt)`` the Result
Daraja would post to its ResultURL; ``registered`` the registered URLs by shortcode.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import secrets
import time

from fakes.server import FakeApp, Request, Response, form_fields, html_page, json_response, post_json

# Daraja refuses callback URLs with these words, in any case (its Register URL page).
BANNED_URL_WORDS = re.compile(r"m-?pesa|safaricom|exec?|cmd|sql|query", re.IGNORECASE)


class FakeDaraja(FakeApp):
    def __init__(self, consumer_key: str = "ck_fake", consumer_secret: str = "cs_fake", passkey: str = "pk_fake",
                 initiator_name: str = "apiop", security_credential: str = "sc_fake") -> None:  # fmt: skip
        super().__init__()
        self.consumer_key, self.consumer_secret, self.passkey = consumer_key, consumer_secret, passkey
        self.initiator_name, self.security_credential = initiator_name, security_credential
        self.tokens: set[str] = set()
        self.pushes: dict[str, dict] = {}
        self.registered: dict[str, dict] = {}
        self.transactions: dict[str, dict] = {}
        self.status_queries: list[dict] = []
        self._ids = itertools.count(1)

    def pay_bill(self, shortcode: str, account_number: str, shillings: int, msisdn: str = "254708374149",
                 status: str = "Completed") -> dict:  # fmt: skip
        """A paybill payment as M-Pesa records it; returns the confirmation body Daraja sends."""
        with self.lock:
            receipt = f"RKT{next(self._ids):07d}"
            self.transactions[receipt] = {"shortcode": shortcode, "amount": shillings, "status": status}
        return {"TransactionType": "Pay Bill", "TransID": receipt, "TransTime": "20251122063845",
                "TransAmount": f"{shillings}.00", "BusinessShortCode": shortcode, "BillRefNumber": account_number,
                "InvoiceNumber": "", "OrgAccountBalance": "", "ThirdPartyTransID": "",
                "MSISDN": msisdn[:5] + "****" + msisdn[-3:], "FirstName": "John", "MiddleName": "", "LastName": "Doe"}  # fmt: skip

    def status_result(self, receipt: str) -> dict:
        """The Result Daraja posts to a Transaction Status query's ResultURL."""
        query = next(q for q in reversed(self.status_queries) if q["TransactionID"] == receipt)
        txn = self.transactions.get(receipt)
        if txn is None or txn["shortcode"] != query["PartyA"]:
            return {"Result": {"ResultType": 0, "ResultCode": 2001, "ResultDesc": "The initiator information is invalid.",
                               "OriginatorConversationID": query["originator"], "ConversationID": query["conversation"],
                               "TransactionID": "MBN0000000"}}  # fmt: skip
        params = [
            {"Key": "DebitPartyName", "Value": "254708374149 - John Doe"},
            {"Key": "CreditPartyName", "Value": f"{txn['shortcode']} - School"},
            {"Key": "TransactionStatus", "Value": txn["status"]},
            {"Key": "Amount", "Value": txn["amount"]},
            {"Key": "ReceiptNo", "Value": receipt},
            {"Key": "ReasonType", "Value": "Pay Bill Online"},
        ]
        return {"Result": {"ResultType": 0, "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
                           "OriginatorConversationID": query["originator"], "ConversationID": query["conversation"],
                           "TransactionID": "MBN0000000", "ResultParameters": {"ResultParameter": params},
                           "ReferenceData": {"ReferenceItem": {"Key": "Occasion"}}}}  # fmt: skip

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
        if request.path == "/mpesa/c2b/v2/registerurl" and request.method == "POST":
            return self._register(body)
        if request.path == "/mpesa/transactionstatus/v1/query" and request.method == "POST":
            return self._status_query(body)
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

    def _register(self, body: dict) -> Response:
        if not re.fullmatch(r"\d{5,7}", str(body.get("ShortCode", ""))):
            return json_response(400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid ShortCode"})
        if body.get("ResponseType") not in ("Completed", "Cancelled"):
            return json_response(400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid ResponseType"})
        for name in ("ConfirmationURL", "ValidationURL"):
            url = str(body.get(name) or "")
            if not url.startswith("https://"):
                return json_response(400, {"errorCode": "400.002.02", "errorMessage": f"Bad Request - Invalid {name}"})
            if BANNED_URL_WORDS.search(url):
                return json_response(400, {"errorCode": "400.002.02", "errorMessage": f"Bad Request - Invalid {name}"})
        with self.lock:
            self.registered[str(body["ShortCode"])] = dict(body)
        return json_response(200, {"OriginatorCoversationID": f"{next(self._ids)}-fake", "ResponseCode": "0",
                                   "ResponseDescription": "Success"})  # fmt: skip

    def _status_query(self, body: dict) -> Response:
        if (body.get("Initiator"), body.get("SecurityCredential")) != (self.initiator_name, self.security_credential):
            return json_response(400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid Initiator"})
        if body.get("CommandID") != "TransactionStatusQuery":
            return json_response(400, {"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid CommandID"})
        for name in ("TransactionID", "PartyA", "IdentifierType", "ResultURL", "QueueTimeOutURL"):
            if not body.get(name):
                return json_response(400, {"errorCode": "400.002.02", "errorMessage": f"Bad Request - Invalid {name}"})
        n = next(self._ids)
        query = {**body, "originator": f"{n}-{n}-1", "conversation": f"AG_20251122_{n:020d}"}
        with self.lock:
            self.status_queries.append(query)
        return json_response(200, {"OriginatorConversationID": query["originator"], "ConversationID": query["conversation"],
                                   "ResponseCode": "0", "ResponseDescription": "Accept the service request successfully."})  # fmt: skip


# What the development server (fakes/app.py, `make run`) mounts at /mpesa, with its demo keys.
FAKE = FakeDaraja
