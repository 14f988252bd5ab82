"""Every payload the providers publish (their documentation, official SDKs' fixtures, recorded
deliveries; sources in providers/<provider>/payloads/documented/SOURCES.md), delivered as the provider
would, signed, through the real endpoint and worker: the answer, and exactly what is stored.

Refunds and disputes are delivered for a payment that exists (set up through the same service a
charge event uses); for providers whose bodies are confirmed through their API, the fake API is
set to what the payload says."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.db import transaction
from django.test import TestCase

from core.money import from_minor
from core.status import PaymentStatus as S
from fakes.server import serve_in_thread
from payments.models import Payment, WebhookEvent
from payments.services import payment_event_apply
from providers.base import NormalizedEvent
from providers.chapa.fake import FakeChapa
from providers.flutterwave.fake import FakeFlutterwave
from providers.mpesa.fake import FakeDaraja
from providers.omise.fake import FakeOmise
from providers.paypal.fake import FakePayPal
from providers.registry import get_provider, provider_part, provider_slugs
from providers.wire import Delivery
from tests.conftest import process_pending, stored_at_once
from tests.factories import AccountFactory, PaymentFactory
from tests.providers.helpers import payloads_dir, post

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Charge:
    status: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Refund:
    amount: int  # the refund's
    paid: int  # the payment's, set up first
    state: str = "succeeded"


@dataclass(frozen=True)
class Total:
    refunded: int
    paid: int


@dataclass(frozen=True)
class Dispute:
    state: str
    amount: int
    paid: int


@dataclass(frozen=True)
class Ignored:
    reason: str


@dataclass(frozen=True)
class Refused:
    status: int


@dataclass(frozen=True)
class Paybill:
    """A C2B confirmation: refused at the STK callback URL, a payment of ``amount`` (once
    Transaction Status confirms it) at the paybill confirmation URL."""

    amount: int


@dataclass(frozen=True)
class Case:
    provider: str
    file: str
    expect: object
    live: bool = False

    def __str__(self) -> str:
        return f"{self.provider}/{self.file}"


def cases(provider: str, live: bool, table: dict) -> list[Case]:
    return [Case(provider, name, expect, live) for name, expect in table.items()]


STRIPE = cases("stripe", False, {
    "checkout.session.completed.paid.api-2020-08-27": Charge(S.SUCCEEDED, 3000, "USD"),
    "payment_intent.succeeded.api-2020-08-27": Charge(S.SUCCEEDED, 2000, "USD"),
    "payment_intent.payment_failed.api-2020-08-27": Charge(S.FAILED, 2000, "USD"),
    "charge.succeeded.api-2020-08-27": Charge(S.SUCCEEDED, 2000, "USD"),
    "charge.failed.api-2020-08-27": Charge(S.FAILED, 2000, "USD"),
    "charge.refunded.full.payment_intent-null.with-refunds-list.api-2020-08-27": Refund(100, 100),
    "charge.refunded.partial.no-payment_intent-field.api-2016-07-06.mage2pro": Refund(10000, 61798),
    "charge.refunded.partial.no-refunds-list.api-2022-11-15-plus.DERIVED": Total(40, 100),
    "charge.refund.updated.succeeded.payment_intent-null": Refund(100, 100),
    "charge.refund.updated.failed.DERIVED": Refund(100, 100, "failed"),
    "refund.created.pending.DERIVED": Refund(40, 100, "pending"),
    "refund.updated.succeeded.DERIVED": Refund(40, 100),
    "refund.failed.DERIVED": Refund(40, 100, "failed"),
    "charge.dispute.created.inquiry-warning_needs_response.payment_intent-null": Dispute("open", 100, 100),
    "charge.dispute.created.needs_response.with-payment_intent.djstripe": Dispute("open", 1000, 1000),
    "charge.dispute.funds_withdrawn.api-2017-12-14": Dispute("open", 25000, 25000),
    "charge.dispute.funds_withdrawn.with-payment_intent.djstripe": Dispute("open", 1000, 1000),
    "charge.dispute.updated.legacy-no-dispute-id": Dispute("open", 1000, 1000),
    "charge.dispute.closed.won.legacy-no-dispute-id": Dispute("won", 1000, 1000),
    "charge.dispute.closed.won.with-payment_intent.djstripe": Dispute("won", 1000, 1000),
    "charge.dispute.closed.lost.DERIVED": Dispute("lost", 1000, 1000),
    "charge.dispute.funds_reinstated.full.djstripe": Dispute("open", 1000, 1000),
    "customer.created": Ignored("customer.created is not about a payment"),
    "payout.paid": Ignored("payout.paid is not about a payment"),
    "transfer.paid": Ignored("transfer.paid is not about a payment"),
})  # fmt: skip

PAYSTACK = cases("paystack", True, {
    "charge.success.card.metadata-0": Charge(S.SUCCEEDED, 10000, "NGN"),
    "charge.success.mobile_money.GHS.metadata-empty-string": Charge(S.SUCCEEDED, 100, "GHS"),
    "charge.success.ussd": Charge(S.SUCCEEDED, 150000, "NGN"),
    "charge.success.bank_transfer.pesalink.KES.metadata-0": Charge(S.SUCCEEDED, 1000, "KES"),
    "charge.success.direct_debit": Charge(S.SUCCEEDED, 10000, "NGN"),
    "charge.success.pos.string-amount": Charge(S.SUCCEEDED, 5000, "NGN"),
    "refund.processed": Refund(5000, 20000),
    "refund.failed": Refund(20000, 20000, "failed"),
    "refund.pending": Ignored("the refund is not done yet"),
    "refund.processing": Ignored("the refund is not done yet"),
    "refund.needs-attention": Ignored("refund.needs-attention is not about a payment"),
    "charge.dispute.create": Dispute("open", 5800, 5800),
    "charge.dispute.remind": Dispute("open", 5800, 5800),
    "charge.dispute.resolve.auto-accepted": Dispute("lost", 5700, 5700),
    "transfer.success": Ignored("transfer.success is not about a payment"),
    "transfer.reversed": Ignored("transfer.reversed is not about a payment"),
    "customeridentification.success": Ignored("is not about a payment"),
    "subscription.disable": Ignored("subscription.disable is not about a payment"),
}) + cases("paystack", False, {
    "charge.success.qr.ZAR.test-domain": Charge(S.SUCCEEDED, 186677, "ZAR"),
    "charge.success.bank_transfer.pwt.test-domain": Charge(S.SUCCEEDED, 25000, "NGN"),
    "charge.success.card.metadata-object.fees-on-customer.test-domain": Charge(S.SUCCEEDED, 25126, "NGN"),
    "charge.success.subscription-plan.test-domain": Charge(S.SUCCEEDED, 110000, "NGN"),
    "charge.success.virtual-terminal.KES.metadata-object.test-domain": Charge(S.SUCCEEDED, 10000, "KES"),
    "transfer.failed.test-domain": Ignored("transfer.failed is not about a payment"),
    "bank.transfer.rejected.test-domain": Ignored("bank.transfer.rejected is not about a payment"),
    "paymentrequest.success.test-domain": Ignored("paymentrequest.success is not about a payment"),
    "subscription.create.test-domain": Ignored("subscription.create is not about a payment"),
    # A live-mode event on a test account never moves money.
    "charge.success.ussd": Ignored("a live-mode event on a test account"),
})  # fmt: skip

FLUTTERWAVE = cases("flutterwave", False, {
    "v3.charge.completed.card.successful.docs": Charge(S.SUCCEEDED, 10000, "NGN"),
    "v3.charge.completed.mpesa.KES.meta-null.docs": Charge(S.SUCCEEDED, 150000, "KES"),
    "v3.charge.completed.bank_transfer.top-level-meta_data.recorded-2025": Charge(S.SUCCEEDED, 5000000, "NGN"),
    "v2-flat.card.successful.rave-docs-2018": Charge(S.SUCCEEDED, 100000, "NGN"),
    "v2-flat.card.successful.recorded-sandbox-2025": Charge(S.SUCCEEDED, 310000, "NGN"),
    "v4.charge.completed.mobile_money.KES.top-level-id.epoch-float.docs-webhooks": Charge(S.SUCCEEDED, 250000, "KES"),
    "v4.charge.completed.card.webhook_id.docs-card": Charge(S.SUCCEEDED, 200000, "NGN"),
    "v4.charge.completed.opay.docs-opay": Charge(S.SUCCEEDED, 20000, "NGN"),
    "v4.charge.completed.bank_transfer.virtual-account.docs-pwbt": Charge(S.SUCCEEDED, 17500, "NGN"),
    "v4.refund.completed.DERIVED": Refund(200000, 500000),
    "v3.transfer.completed.successful.docs": Ignored("is a payout or transfer, not a payment"),
    "v3.transfer.completed.failed.docs": Ignored("is a payout or transfer, not a payment"),
    "v4.transfer.disburse.successful.docs-transfers": Ignored("is a payout or transfer, not a payment"),
})  # fmt: skip

OMISE = cases("omise", False, {
    "charge.create.old-api-no-status.captured-bool.refunded-int.ruby-fixture": Total(10000, 100000),
    "charge.create.card.successful.api-2015-11.go-recorded": Charge(S.SUCCEEDED, 204842, "THB"),
    "charge.update.successful.api-2015-11.go-recorded": Charge(S.SUCCEEDED, 204842, "THB"),
    "charge.create.pending.authorized-capture-false.api-2015-11.go-recorded": Charge(S.PENDING, 409669, "THB"),
    "charge.capture.successful.api-2015-11.go-recorded": Charge(S.SUCCEEDED, 409669, "THB"),
    "charge.update.fully-refunded.refunded-int.api-2015-11.php-fixture": Total(100000, 100000),
    "charge.create.card.successful.api-2015-11.mage2pro-recorded-2016": Charge(S.SUCCEEDED, 304640, "THB"),
    "refund.create.voided.old-api-created-field.mage2pro-recorded-2017": Refund(305660, 305660),
    "charge.create.card.successful.api-2019-05-29.delivered-payload.php-fixture": Charge(S.SUCCEEDED, 12345, "THB"),
    "charge.complete.successful.api-2019-05-29.DERIVED": Charge(S.SUCCEEDED, 12345, "THB"),
    "charge.complete.failed.api-2019-05-29.DERIVED": Charge(S.FAILED, 12345, "THB"),
    "charge.complete.pending-not-authorized-3ds.api-2019-05-29.DERIVED": Charge(S.PENDING, 5000, "THB"),
    "refund.create.partial.status-closed.api-2019-05-29.DERIVED": Refund(10000, 50000),
    "dispute.create.open.api-2019-05-29.DERIVED": Dispute("open", 100000, 100000),
    "dispute.close.lost-accepted.api-2019-05-29.DERIVED": Dispute("lost", 100000, 100000),
    "dispute.close.won.old-api-created-field.DERIVED": Dispute("won", 100000, 100000),
    "customer.create.ignored.go-recorded": Ignored("customer.create is not about a payment"),
    "transfer.destroy.ignored.deleted-object.go-fixture": Ignored("transfer.destroy is not about a payment"),
}) + cases("omise", True, {
    "charge.create.card.livemode.metadata-mixed-types.event-created-field.php-recorded-2022": Charge(S.SUCCEEDED, 1070, "THB"),
})  # fmt: skip

CHAPA = cases("chapa", True, {
    "charge.success.telebirr.live.email-null.docs": Charge(S.SUCCEEDED, 40000, "ETB"),
    "charge.failed-cancelled.DERIVED": Charge(S.FAILED, 40000, "ETB"),
    "charge.refunded.DERIVED": Refund(40000, 40000),
    "charge.reversed.DERIVED": Refund(40000, 40000),
    "payout.success.docs": Ignored("payouts are money paid out, not a payment"),
    "payout.failed-cancelled.DERIVED": Ignored("payouts are money paid out, not a payment"),
}) + cases("chapa", False, {
    "charge.success.test-mode.recorded-2026": Charge(S.SUCCEEDED, 10000, "ETB"),
})  # fmt: skip

MPESA = cases("mpesa", False, {
    "stk.callback.success.amount-decimal.docs-daraja": Charge(S.SUCCEEDED, 100, "KES"),
    "stk.callback.success.balance-item-without-value.docs-v1-2017": Charge(S.SUCCEEDED, 100, "KES"),
    "stk.callback.success.recorded-live-2026": Charge(S.SUCCEEDED, 45000, "KES"),
    "stk.callback.cancelled-1032.docs-daraja": Charge(S.CANCELLED, 100, "KES"),
    "stk.callback.cancelled-1032.docs-v1-2017": Charge(S.CANCELLED, 100, "KES"),
    "stk.callback.cancelled-1032.recorded-live-2026": Charge(S.CANCELLED, 100, "KES"),
    "stk.callback.ds-timeout-1037.recorded-live-2026": Charge(S.FAILED, 100, "KES"),
    "stk.callback.insufficient-balance-1.recorded-live-2026": Charge(S.FAILED, 100, "KES"),
    # Paybill confirmations belong on the C2B URL; at the STK callback URL they are refused.
    "c2b.confirmation.paybill.masked-msisdn.docs-daraja": Paybill(1000),
    "c2b.confirmation.paybill.recorded-sandbox-2017": Paybill(10000),
    # Not STK callbacks: they cannot be authenticated at the STK callback URL (no push of ours).
    "reversal.result.success.docs-daraja3": Refused(401),
    "reversal.result.failed-R000002-string-code.docs-daraja3": Refused(401),
    "reversal.result.no-parameters.docs-v1-2017": Refused(401),
    "transaction-status.result.completed.docs-daraja": Refused(401),
    "b2c.result.success.docs-v1-2017": Refused(401),
})  # fmt: skip

PAYPAL = cases("paypal", False, {
    "PAYMENT.CAPTURE.COMPLETED.live.authorization-up.rubygems-fixture": Charge(S.SUCCEEDED, 500, "USD"),
    "PAYMENT.CAPTURE.COMPLETED.sandbox.order-id.processor_response.apifox": Charge(S.SUCCEEDED, 10000, "USD"),
    "PAYMENT.CAPTURE.DENIED.DERIVED": Charge(S.FAILED, 10000, "USD"),
    "PAYMENT.CAPTURE.REFUNDED.partial.DERIVED": Refund(4000, 10000),
    "CHECKOUT.ORDER.APPROVED.DERIVED": Charge(S.SUCCEEDED, 10000, "USD"),
    "CUSTOMER.DISPUTE.CREATED.unauthorised.DERIVED": Dispute("open", 10000, 10000),
    "PAYMENT.SALE.COMPLETED.v1-api.php-sdk-sample": Ignored("is not about a capture, a refund or a dispute"),
})  # fmt: skip

CASES = STRIPE + PAYSTACK + FLUTTERWAVE + OMISE + CHAPA + MPESA + PAYPAL
SECRETS = {"paypal": "8PT597110X687430L", "stripe": "whsec_documented", "paystack": "sk_test_documented", "flutterwave": "flw-documented-hash",
           "omise": "b21pc2UtZG9jdW1lbnRlZA==", "chapa": "chapa-documented-secret", "mpesa": "mpesa-documented-secret"}  # fmt: skip
API_KEYS = {"stripe": "sk_test_documented", "paystack": "sk_test_documented", "flutterwave": "FLWSECK_TEST-doc",
            "omise": "skey_test_documented", "chapa": "CHASECK_TEST-documented", "paypal": "EdocSecret"}  # fmt: skip
MPESA_CREDENTIALS = {"consumer_key": "ck_doc", "consumer_secret": "cs_doc", "shortcode": "174379", "passkey": "pk_doc"}


def documented(case: Case) -> bytes:
    return (payloads_dir(case.provider) / "documented" / f"{case.file}.json").read_bytes()


def payload_of(body: bytes) -> dict:
    return json.loads(body, parse_float=Decimal)


# A live account's key for the documented live deliveries: only its prefix matters to the adapter
# (live, not test); it is plainly not a real key.
PAYSTACK_LIVE_PLACEHOLDER = "sk_live_not-a-real-key"


def account_for(case: Case, school):
    test_mode = not case.live
    if case.provider == "paystack":
        key = SECRETS["paystack"] if test_mode else PAYSTACK_LIVE_PLACEHOLDER
        return AccountFactory(school=school, provider="paystack", webhook_secret=key, api_key=key, test_mode=test_mode)
    extra = {"credentials": MPESA_CREDENTIALS} if case.provider == "mpesa" else {}
    if case.provider == "paypal":
        extra = {"credentials": {"client_id": "AdocClient"}}
    api_key = API_KEYS.get(case.provider, "")
    if not test_mode and api_key:
        api_key = api_key.replace("test", "live").replace("TEST", "LIVE")
    return AccountFactory(school=school, provider=case.provider, webhook_secret=SECRETS[case.provider],
                          api_key=api_key, test_mode=test_mode, **extra)  # fmt: skip


def parsed(case: Case, account, body: bytes) -> NormalizedEvent:
    return get_provider(case.provider).parse_body(body=body, headers={}, account=account)


def succeeded_payment(account, event: NormalizedEvent, amount: int, currency: str) -> Payment:
    """The payment a refund or dispute is about, as its charge's own event would have made it."""
    charge = NormalizedEvent(
        event_id=f"setup-{uuid.uuid4().hex[:8]}", event_type="setup", status=S.SUCCEEDED,
        external_txn_id=event.external_txn_id or event.charge_id or f"txn-{uuid.uuid4().hex[:6]}",
        charge_id=event.charge_id, reference=event.reference, amount_minor=amount, currency=currency,
    )  # fmt: skip
    with transaction.atomic():
        return payment_event_apply(account=account, event=charge).payment


def delivery_for(case: Case, body: bytes, payment: Payment | None) -> Delivery:
    """Signed as the provider signs it: its package's wire module, found through the registry."""
    secret = SECRETS[case.provider]
    if case.provider == "paystack" and case.live:
        secret = PAYSTACK_LIVE_PLACEHOLDER  # Paystack signs with the account's (live) secret key
    if case.provider == "flutterwave" and "type" in (payload := payload_of(body)) and "data" in payload:
        return Delivery(body, {"flutterwave-signature": secret})  # v4's header
    wire = provider_part(case.provider, "wire")
    return wire.signed_delivery(body, secret=secret, payment_id=payment.pk if payment else "unknown")


@pytest.fixture(scope="module")
def _api_servers():
    """The providers' APIs that confirm bodies, on sockets: started once for the module (each
    test uses its own ids)."""
    fakes = {
        "flutterwave": (FakeFlutterwave(secret_key=API_KEYS["flutterwave"]), "FLUTTERWAVE_API_BASE_URL"),
        "omise": (FakeOmise(secret_key=API_KEYS["omise"]), "OMISE_API_BASE_URL"),
        "chapa": (FakeChapa(secret_key=API_KEYS["chapa"]), "CHAPA_API_BASE_URL"),
        "mpesa": (FakeDaraja(consumer_key="ck_doc", consumer_secret="cs_doc", passkey="pk_doc"), "MPESA_SANDBOX_API_BASE_URL"),
        # Verifies every delivery (verify-webhook-signature) and captures approved orders.
        "paypal": (FakePayPal(client_id="AdocClient", client_secret="EdocSecret"), "PAYPAL_SANDBOX_API_BASE_URL"),
    }
    servers = {name: (fake, setting, serve_in_thread(fake)) for name, (fake, setting) in fakes.items()}
    yield servers
    for _, _, server in servers.values():
        server.stop()


@pytest.fixture
def apis(settings, _api_servers):
    for fake, setting, server in _api_servers.values():
        setattr(settings, setting, server.base_url)
    return {name: fake for name, (fake, _, _) in _api_servers.items()}


def api_knows(case: Case, apis: dict, event: NormalizedEvent, payment: Payment | None) -> None:
    """Set the provider's API to what the payload says (bodies of these providers are confirmed
    through it), so the confirmation agrees with the documented outcome."""
    expect = case.expect
    if case.provider == "flutterwave":
        fake = apis["flutterwave"]
        amount = expect.amount if isinstance(expect, Charge) else expect.paid
        currency = expect.currency if isinstance(expect, Charge) else "NGN"
        txn_id = int(event.external_txn_id) if event.external_txn_id.isdigit() else 90_000_001
        reference = event.reference or (payment.provider_reference if payment else "") or "ref-flw"
        fake.transactions[reference] = {
            "id": txn_id, "tx_ref": reference, "flw_ref": "FLW-DOC", "amount": from_minor(amount, currency),
            "currency": currency, "status": "successful" if not isinstance(expect, Charge) else
            {S.SUCCEEDED: "successful", S.FAILED: "failed"}.get(expect.status, "pending"),
            "processor_response": "ok", "customer": {}, "meta": None,
        }  # fmt: skip
        if isinstance(expect, Refund):
            fake.refunds.append({"id": 7001, "tx_id": txn_id, "amount_refunded": from_minor(expect.amount, currency),
                                 "status": "completed"})  # fmt: skip
        if payment is not None and not payment.provider_reference:
            Payment.objects.filter(pk=payment.pk).update(provider_reference=reference)
    elif case.provider == "omise":
        payload = json.loads(documented(case))["data"]
        charge_id = event.external_txn_id
        if isinstance(expect, Charge):
            charge = {**payload, "status": {S.SUCCEEDED: "successful", S.FAILED: "failed"}.get(expect.status, "pending")}
        else:
            refunded = expect.refunded if isinstance(expect, Total) else expect.amount
            charge = {"object": "charge", "id": charge_id, "livemode": case.live, "amount": expect.paid,
                      "currency": "thb", "status": "successful", "refunded_amount": refunded}  # fmt: skip
            if isinstance(expect, Refund):
                refund_id = payload["id"]
                charge["refunds"] = {"data": [{"object": "refund", "id": refund_id, "amount": expect.amount,
                                              "charge": charge_id}]}  # fmt: skip
        apis["omise"].charges[charge_id] = charge
    elif case.provider == "chapa":
        payload = json.loads(documented(case))
        status = "success"
        if isinstance(expect, Charge) and expect.status == S.FAILED:
            status = "failed"
        apis["chapa"].transactions[event.reference] = {**payload, "status": status, "mode": "live" if case.live else "test"}
    elif case.provider == "paypal" and event.checkout_id and event.event_type == "CHECKOUT.ORDER.APPROVED":
        payload = json.loads(documented(case))["resource"]
        apis["paypal"].orders[event.checkout_id] = {**payload, "status": "APPROVED"}
    elif case.provider == "mpesa" and payment is not None:
        result = {S.SUCCEEDED: 0, S.CANCELLED: 1032, S.FAILED: 1}[case.expect.status]
        apis["mpesa"].pushes[payment.provider_checkout_id] = {
            "merchant_request_id": "m", "amount": 1, "phone": "254708374149", "callback_url": "", "result_code": result,
            "receipt": event.external_txn_id or None,
        }  # fmt: skip


@pytest.mark.parametrize("case", [c for c in CASES if isinstance(c.expect, Paybill)], ids=str)
def test_documented_paybill_confirmation(client, school, apis, case, settings, fake_directory):
    from providers.mpesa.c2b import c2b_token, status_token

    payload = json.loads(documented(case))
    credentials = {**MPESA_CREDENTIALS, "paybill_number": payload["BusinessShortCode"], "initiator_name": "apiop",
                   "security_credential": "sc_fake"}  # fmt: skip
    account = AccountFactory(school=school, provider="mpesa", webhook_secret=SECRETS["mpesa"], credentials=credentials,
                             test_mode=True)  # fmt: skip
    stk = post(client, "mpesa", delivery_for(case, documented(case), None), school=school.code)
    assert stk.status_code == 401 and not WebhookEvent.objects.exists()
    base = f"/api/webhooks/c2b/{school.code}/{c2b_token(SECRETS['mpesa'], account.pk)}"
    response = client.post(f"{base}/confirmation", data=documented(case), content_type="application/json")
    assert response.status_code == 200, response.content
    process_pending()
    receipt = payload["TransID"]
    apis["mpesa"].transactions[receipt] = {"shortcode": payload["BusinessShortCode"], "amount": case.expect.amount // 100,
                                           "status": "Completed"}  # fmt: skip
    result = apis["mpesa"].status_result(receipt)
    answer = client.post(f"{base}/result?t={status_token(SECRETS['mpesa'], receipt)}", data=json.dumps(result),
                         content_type="application/json")  # fmt: skip
    assert answer.status_code == 200, answer.content
    payment = Payment.objects.get(account=account)
    assert (payment.status, payment.amount_minor, payment.currency, payment.external_txn_id) == (
        S.SUCCEEDED, case.expect.amount, "KES", receipt)
    assert payment.provider_student_id == payload["BillRefNumber"]


@pytest.mark.parametrize("case", [c for c in CASES if not isinstance(c.expect, Paybill)], ids=str)
def test_documented_payload(client, school, apis, case):
    account = account_for(case, school)
    body = documented(case)
    expect = case.expect
    payment = None
    event = None if isinstance(expect, Refused) else parsed(case, account, body)
    if case.provider == "mpesa" and isinstance(expect, Charge):
        # An STK callback answers a push we started: that payment, with the callback's checkout id.
        payment = PaymentFactory(account=account, external_txn_id=None, provider_checkout_id=event.checkout_id,
                                 amount_minor=expect.amount, currency="KES", payer={"phone": "0708374149"})  # fmt: skip
    if isinstance(expect, (Refund, Total, Dispute)):
        currency = event.currency or {"flutterwave": "NGN", "omise": "THB"}.get(case.provider, "USD")
        payment = succeeded_payment(account, event, expect.paid, currency)
        if isinstance(expect, Refund) and expect.state == "failed":
            # A refund that failed had been reported done first: its money comes back.
            refund = event.refunds[0]
            undone = NormalizedEvent(event_id="setup-refund", event_type="setup", status=None,
                                     external_txn_id=event.external_txn_id, reference=event.reference,
                                     charge_id=event.charge_id, currency=currency,
                                     refunds=(refund.__class__(refund.key, refund.amount_minor, "succeeded"),))  # fmt: skip
            with transaction.atomic():
                payment_event_apply(account=account, event=undone)
    if case.provider in ("flutterwave", "omise", "chapa"):
        apis[case.provider].secret_key = account.api_key  # the account's mode's key
    if event is not None and not isinstance(expect, Ignored):
        api_knows(case, apis, event, payment)

    response = post(client, case.provider, delivery_for(case, body, payment), school=school.code)

    if isinstance(expect, Refused):
        assert response.status_code == expect.status, response.content
        assert response.json()["code"] == "signature_invalid"
        assert not WebhookEvent.objects.exists()
        return
    if isinstance(expect, Ignored):
        assert response.status_code == 200, response.content
        answer = response.json()
        assert (answer["detail"], answer["status"]) == ("Webhook ignored", "ignored")
        assert expect.reason in answer["reason"]
        stored = WebhookEvent.objects.get(external_event_id=answer["event_id"])
        assert (stored.status, stored.result) == (WebhookEvent.Status.IGNORED, answer["reason"])
        return
    assert response.status_code == 202, response.content
    with TestCase.captureOnCommitCallbacks(execute=True):
        results = process_pending()
    stored = WebhookEvent.objects.get(external_event_id=response.json()["event_id"])
    assert stored.status == WebhookEvent.Status.PROCESSED, (stored.status, stored.last_error, results)
    payment = Payment.objects.get(pk=payment.pk) if payment else Payment.objects.get(account=account)
    if isinstance(expect, Charge):
        assert (payment.status, payment.amount_minor, payment.currency) == (expect.status, expect.amount, expect.currency)
    elif isinstance(expect, Refund):
        refunded = expect.amount if expect.state == "succeeded" else 0
        assert payment.refunded_amount_minor == refunded
        assert payment.refund_pending_amount_minor == (expect.amount if expect.state == "pending" else 0)
    elif isinstance(expect, Total):
        assert payment.refunded_amount_minor == expect.refunded
        assert payment.status == (S.REFUNDED if expect.refunded == expect.paid else S.PARTIALLY_REFUNDED)
    elif isinstance(expect, Dispute):
        status = {"open": S.DISPUTED, "won": S.SUCCEEDED, "lost": S.CHARGED_BACK}[expect.state]
        assert payment.status == status
        assert payment.disputed_amount_minor == (expect.amount if expect.state == "open" else 0)
        assert payment.charged_back_amount_minor == (expect.amount if expect.state == "lost" else 0)
    assert Payment.objects.filter(account=account).count() == 1  # nothing phantom


def test_every_documented_payload_is_under_test():
    on_disk = {
        (provider, path.stem) for provider in provider_slugs() for path in (payloads_dir(provider) / "documented").glob("*.json")
    }
    assert on_disk == {(case.provider, case.file) for case in CASES}


# --- The same payloads applied together, as the worker applies a message of events --------------


@pytest.mark.parametrize("live", [True, False], ids=["live", "test"])
def test_documented_paystack_charges_applied_in_one_message(client, school, live, caplog, fake_directory):
    """Paystack's documented charge.success deliveries (cards, mobile money in GHS, bank
    transfers in KES, USSD, QR in ZAR...), stored one after another and applied in one worker
    message: each payment exactly as its payload says."""
    cases = [c for c in PAYSTACK if isinstance(c.expect, Charge) and c.live == live]
    account = account_for(cases[0], school)
    for case in cases:
        response = post(client, "paystack", delivery_for(case, documented(case), None), school=school.code)
        assert response.status_code == 202, response.content
    results = process_pending()
    assert len(results) == len(cases) and not [r for r in caplog.records if r.name == "webhooks.batches"]
    for case in cases:
        payment = Payment.objects.get(account=account, external_txn_id=parsed(case, account, documented(case)).external_txn_id)
        assert (payment.status, payment.amount_minor, payment.currency) == (
            case.expect.status, case.expect.amount, case.expect.currency,
        ), case.file  # fmt: skip
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {WebhookEvent.Status.PROCESSED}


@pytest.mark.django_db(transaction=True)
def test_documented_paystack_charges_delivered_at_once_are_stored_together(school, fake_directory):
    """Paystack's documented live charge.success deliveries, each sent twice, all arriving at the
    same moment on one web process: stored by one statement (the request path's group commit),
    each once, byte for byte, then each payment exactly as its payload says."""
    from webhooks.services import webhook_receive

    cases = [c for c in PAYSTACK if isinstance(c.expect, Charge) and c.live]
    account = account_for(cases[0], school)
    deliveries = [delivery_for(case, documented(case), None) for case in cases] * 2

    def receive(delivery: Delivery):
        return webhook_receive(provider_slug="paystack", school_code=school.code, body=delivery.body,
                               headers=delivery.headers, query=delivery.query or None, remote_addr="52.31.139.75")  # fmt: skip

    receipts, statements = stored_at_once([lambda d=d: receive(d) for d in deliveries])

    assert statements == [1, len(deliveries) - 1]
    events = [parsed(case, account, documented(case)).event_id for case in cases]
    assert sorted((r.event_id, r.created, r.status) for r in receipts) == sorted(
        [(event_id, True, "pending") for event_id in events] + [(event_id, False, "pending") for event_id in events]
    )
    stored = dict(WebhookEvent.objects.values_list("external_event_id", "raw_body"))
    assert stored == {event_id: documented(case).decode() for event_id, case in zip(events, cases)}
    process_pending()
    for case in cases:
        payment = Payment.objects.get(account=account, external_txn_id=parsed(case, account, documented(case)).external_txn_id)
        assert (payment.status, payment.amount_minor, payment.currency) == (
            case.expect.status, case.expect.amount, case.expect.currency,
        ), case.file  # fmt: skip


STRIPE_ONE_INTENT = [c for c in STRIPE if isinstance(c.expect, Charge)]  # one payment intent's events


@pytest.mark.parametrize("order", ["as documented", "reversed"])
def test_documented_stripe_events_of_one_intent_in_one_message_settle_as_one_at_a_time(client, school, order, caplog):
    """Stripe's documented events of one payment intent (the Checkout Session, the intent and the
    charge, succeeded and failed) in one worker message, in either order: the same payment, audit
    entries and outbox events as applying them one at a time."""
    from collections import Counter

    from payments.models import AuditLog, OutboxEvent
    from webhooks.batches import webhook_events_process
    from webhooks.services import webhook_event_run

    account = account_for(STRIPE_ONE_INTENT[0], school)
    for number, case in enumerate(STRIPE_ONE_INTENT):
        # The samples share one placeholder event id; each is its own delivery here.
        body = documented(case).replace(b'"evt_000000000000000000000000"', f'"evt_doc_{number}"'.encode(), 1)
        response = post(client, "stripe", delivery_for(case, body, None), school=school.code)
        assert response.status_code == 202, response.content
    event_ids = list(WebhookEvent.objects.order_by("pk").values_list("pk", flat=True))
    if order == "reversed":
        event_ids.reverse()

    def what_staff_see():
        payment = Payment.objects.get(account=account)
        return (
            (payment.status, payment.amount_minor, payment.currency, payment.ledger_conflict),
            list(OutboxEvent.objects.filter(key=f"payment:{payment.pk}").order_by("pk").values_list("event_type", flat=True)),
            Counter(AuditLog.objects.filter(target_id=str(payment.pk)).values_list("action", flat=True)),
            sorted(WebhookEvent.objects.values_list("external_event_id", "status", "result")),
        )

    with transaction.atomic():
        with TestCase.captureOnCommitCallbacks(execute=True):
            for event_id in event_ids:
                webhook_event_run(event_id=event_id)
        expected = what_staff_see()
        transaction.set_rollback(True)
    with TestCase.captureOnCommitCallbacks(execute=True):
        webhook_events_process(events=[(event_id, None) for event_id in event_ids])
    assert not [r for r in caplog.records if r.name == "webhooks.batches"]
    assert what_staff_see() == expected
    # A success outranks the failures; the samples' amounts differ, which the ledger reports.
    assert expected[0][0] == S.SUCCEEDED and expected[0][3]
