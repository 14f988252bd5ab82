"""The fake QuickBooks speaks what the real libraries expect (docs/reference/quickbooks.md §1-§4), checked with
``intuit-oauth`` and ``python-quickbooks`` themselves over a socket, no Django involved."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.exceptions import AuthorizationException, QuickbooksException, ValidationException
from quickbooks.objects import Customer, Invoice
from quickbooks.objects.base import Ref
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail

from fakes.quickbooks import FakeQuickBooks
from fakes.server import serve_in_thread
from tests.quickbooks_sync.conftest import CLIENT_ID, CLIENT_SECRET, REALM


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    fake = FakeQuickBooks(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    fake.add_company(REALM, home_currency="UGX")
    server = serve_in_thread(fake)
    fake.base_url = server.base_url
    yield fake
    server.stop()


def auth_client(fake, **tokens) -> AuthClient:
    return AuthClient(
        CLIENT_ID, CLIENT_SECRET, "http://localhost/cb", f"{fake.base_url}/.well-known/openid_configuration", **tokens
    )


def client(fake) -> QuickBooks:
    access, refresh = fake.issue_tokens(REALM)
    qb = QuickBooks(
        auth_client=auth_client(fake, access_token=access),
        refresh_token=refresh,
        company_id=REALM,
        minorversion=75,
        use_decimal=True,
    )
    qb.api_url_v3 = f"{fake.base_url}/v3"
    return qb


def test_discovery_names_every_endpoint_intuit_oauth_reads(fake):
    auth = auth_client(fake)
    assert auth.auth_endpoint == f"{fake.base_url}/connect/oauth2"
    assert auth.token_endpoint == f"{fake.base_url}/oauth2/v1/tokens/bearer"
    assert auth.revoke_endpoint == f"{fake.base_url}/oauth2/v1/tokens/revoke"


def test_refresh_tokens_rotate_and_a_used_one_is_refused(fake):
    _, refresh = fake.issue_tokens(REALM)
    auth = auth_client(fake)
    auth.refresh(refresh_token=refresh)
    assert auth.refresh_token != refresh and (auth.expires_in, auth.x_refresh_token_expires_in) == (3600, 8_726_400)
    with pytest.raises(AuthClientError) as refused:
        auth_client(fake).refresh(refresh_token=refresh)
    assert refused.value.status_code == 400 and json.loads(refused.value.content)["error"] == "invalid_grant"
    assert auth.revoke() is True
    assert fake.current_refresh_tokens(REALM) == []


def test_an_authorization_code_works_once(fake):
    auth = auth_client(fake)
    consent = httpx.get(auth.get_authorization_url([Scopes.ACCOUNTING]))
    code = httpx.URL(consent.headers["location"]).params["code"]
    auth.get_bearer_token(code, realm_id=REALM)
    with pytest.raises(AuthClientError):
        auth_client(fake).get_bearer_token(code, realm_id=REALM)


def test_queries_follow_the_grammar(fake):
    qb = client(fake)
    a = fake.add_customer(REALM, "O'Neil Kato (STU-1)")
    b = fake.add_customer(REALM, "Amina (STU-2)")
    fake.add_customer(REALM, "Gone (STU-3)", active=False)
    fake.add_invoice(REALM, customer_id=a["Id"], amount=100, txn_date="2025-02-01")
    fake.add_invoice(REALM, customer_id=b["Id"], amount=50, txn_date="2025-01-01")
    paid = fake.add_invoice(REALM, customer_id=b["Id"], amount=70)
    fake.companies[REALM].table("Invoice")[paid["Id"]]["Balance"] = Decimal(0)

    open_invoices = Invoice.where(
        f"CustomerRef IN ('{a['Id']}', '{b['Id']}') AND Balance > '0'", order_by="TxnDate", qb=qb
    )
    assert [(i.CustomerRef.value, i.Balance) for i in open_invoices] == [(b["Id"], 50), (a["Id"], 100)]
    assert [
        c.DisplayName for c in Customer.choose(["O'Neil Kato (STU-1)", "Gone (STU-3)"], field="DisplayName", qb=qb)
    ] == ["O'Neil Kato (STU-1)"]  # inactive names are hidden unless asked for
    assert Customer.count("Active IN (true, false)", qb=qb) == 3
    assert len(Customer.where("DisplayName LIKE '%STU%'", max_results=2, qb=qb)) == 2
    assert [c.DisplayName for c in Customer.where("", start_position=2, max_results=1, qb=qb)] == ["Amina (STU-2)"]
    with pytest.raises(ValidationException) as error:
        qb.query("SELECT * FROM Customer WHERE Id = '1' OR Id = '2'")
    assert error.value.error_code == 4000


def test_documents_are_validated_and_answered_in_the_v3_format(fake):
    qb = client(fake)
    customer = fake.add_customer(REALM, "Amina (STU-2)")
    invoice = Invoice()
    invoice.CustomerRef = Customer.get(customer["Id"], qb=qb).to_ref()
    line = SalesItemLine()
    line.Amount = Decimal("250000")
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = Ref()
    line.SalesItemLineDetail.ItemRef.value = "1"
    invoice.Line.append(line)
    saved = invoice.save(qb=qb)
    assert (saved.TotalAmt, saved.Balance) == (250_000, 250_000)

    receipt = {
        "CustomerRef": {"value": customer["Id"]},
        "Line": [
            {
                "Amount": "10",
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 2, "UnitPrice": "4"},
            }
        ],
    }
    with pytest.raises(QuickbooksException) as mismatch:
        qb.create_object("SalesReceipt", json.dumps(receipt))
    assert mismatch.value.error_code == 6070
    receipt["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"] = "999"
    with pytest.raises(ValidationException) as unknown:
        qb.create_object("SalesReceipt", json.dumps(receipt))
    assert unknown.value.error_code == 2500


def test_a_requestid_is_answered_once_and_replayed_after(fake):
    qb = client(fake)
    customer = fake.add_customer(REALM, "Amina (STU-2)")
    body = json.dumps({"CustomerRef": {"value": customer["Id"]}, "TotalAmt": "100"})
    first = qb.create_object("Payment", body, request_id="req-1")
    again = qb.create_object("Payment", body, request_id="req-1")
    assert first == again and len(fake.objects(REALM, "Payment")) == 1
    fake.request_id_replay = "fault600"
    with pytest.raises(QuickbooksException) as duplicate:
        qb.create_object("Payment", body, request_id="req-1")
    assert duplicate.value.error_code == 600


def test_batch_answers_each_item_with_its_bid(fake):
    qb = client(fake)
    fake.add_customer(REALM, "Taken (STU-9)")
    customers = []
    for name in ("New (STU-8)", "Taken (STU-9)"):
        customer = Customer()
        customer.DisplayName = name
        customers.append(customer)
    result = batch_create(customers, qb=qb)
    assert [c.DisplayName for c in result.successes] == ["New (STU-8)"]
    (fault,) = result.faults
    assert (fault.Error[0].code, fault.original_object.DisplayName) == ("6240", "Taken (STU-9)")


def test_expired_tokens_get_the_lower_case_401(fake):
    qb = client(fake)
    fake.expire_access_tokens()
    with pytest.raises(AuthorizationException) as refused:
        Customer.all(qb=qb)
    assert refused.value.error_code == 401
    assert json.loads(refused.value.detail)["fault"]["error"][0]["code"] == "3200"


def test_beyond_the_per_second_limit_it_answers_429(fake):
    qb = client(fake)
    fake.per_second = 3
    answers = [
        qb.process_request("GET", f"{fake.base_url}/v3/company/{REALM}/preferences", headers={}, params={}).status_code
        for _ in range(5)
    ]
    assert answers[:3] == [200, 200, 200] and 429 in answers[3:]
    assert fake.throttled >= 1
    # python-quickbooks itself only sees the fault 3001 (docs/reference/quickbooks.md §4.2).
    with pytest.raises(ValidationException) as throttled:
        Customer.all(qb=qb)
    assert throttled.value.error_code == 3001
