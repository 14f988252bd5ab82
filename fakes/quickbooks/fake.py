"""The fake QuickBooks Online: Intuit's OAuth 2.0 endpoints and the v3 accounting API, over real
sockets, so ``intuit-oauth`` and ``python-quickbooks`` run unpatched against it.

What it speaks (see ``docs/reference/quickbooks.md``; the section numbers below are that file's):

- OAuth (§1): the discovery document ``/.well-known/openid_configuration`` (and the sandbox
  one), an authorization endpoint that consents at once and redirects back with ``code``,
  ``state`` and ``realmId``, the token endpoint (authorization code; refresh with **rotation**:
  every refresh issues a new refresh token and the used one stops working, stricter than Intuit,
  so a lost newest token shows up at once as ``invalid_grant``), and revocation.
- v3 (§2): ``/v3/company/<realm>/query`` (POST ``application/text`` or GET ``?query=``),
  ``customer``, ``invoice``, ``payment``, ``salesreceipt``, ``refundreceipt`` (create and read),
  ``batch``, ``preferences``, ``companyinfo``; the ``Fault`` envelope with Intuit's codes, the
  lower-case 401 envelope, ``requestid`` de-duplication (§3: a replay returns the original
  response, or fault 600 when ``request_id_replay = "fault600"``).
- Limits (§4.1): per company, requests per minute, per second, concurrent requests and batch
  calls per minute; beyond them HTTP 429 with fault 3001 (§4.2). ``time_scale`` speeds the
  fake's clock up (a scale of 10 makes its minute last 6 s) for benchmarks.

Fault injection for tests: ``drop_next_create`` (the create is stored, the connection is then
closed without an answer), ``fail_next`` (5xx), ``throttle_next`` (429), ``expire_access_tokens``,
``revoke_all``; ``dedupe_request_ids = False`` makes it forget every ``requestid``.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal

from fakes.quickbooks.api import AccountingApi
from fakes.quickbooks.company import Company, _Grant, _Token
from fakes.quickbooks.oauth import OAuthEndpoints
from fakes.quickbooks.wire import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REALM,
    DEMO_REFRESH_TOKEN,
    LIMIT_BATCH_PER_MINUTE,
    LIMIT_CONCURRENT,
    LIMIT_PER_MINUTE,
    LIMIT_PER_SECOND,
    _drop_socket,
    _DropConnection,
    _json,
    _now_iso,
)
from fakes.server import _REASONS, FakeApp, RecordedRequest, Request, Response, read_request


class FakeQuickBooks(OAuthEndpoints, AccountingApi, FakeApp):
    def __init__(
        self,
        *,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        per_minute: int = LIMIT_PER_MINUTE,
        per_second: int = LIMIT_PER_SECOND,
        concurrent: int = LIMIT_CONCURRENT,
        batch_per_minute: int = LIMIT_BATCH_PER_MINUTE,
        time_scale: float = 1.0,
        access_token_seconds: int = 3600,
        refresh_token_seconds: int = 8_726_400,
        latency_seconds: float = 0.0,
        record_requests: bool = True,
        browser_base_url: str | None = None,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        # Where a browser reaches this fake, when not where the service does (compose: the
        # service calls http://fakes:8001/qbo, staff's browser opens http://localhost:8001/qbo).
        self.browser_base_url = browser_base_url.rstrip("/") if browser_base_url else None
        self.per_minute, self.per_second, self.concurrent = per_minute, per_second, concurrent
        self.batch_per_minute = batch_per_minute
        self.time_scale = time_scale
        self.access_token_seconds = access_token_seconds
        self.refresh_token_seconds = refresh_token_seconds
        self.latency_seconds = latency_seconds
        self.record_requests = record_requests
        self.dedupe_request_ids = True
        self.request_id_replay = "response"  # or "fault600"
        self.rotate_refresh_tokens = True
        self.token_latency_seconds = 0.0
        # Entities whose new documents queries do not find until ``index_now()``: a search
        # index that lags behind writes, so a look-up can miss a create that landed.
        self.query_lag: set[str] = set()
        self.consent_realm: str | None = None  # the company a user "picks" at the consent screen
        self.decline_next_consent = False
        self.companies: dict[str, Company] = {}
        self._codes: dict[str, dict] = {}
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._drop_creates: list[str | None] = []
        self._failures: list[tuple[int, str | None]] = []
        # Extra delay of requests to one path segment, e.g. {"salesreceipt": 0.5}.
        self.latency_by_path: dict[str, float] = {}
        self._throttles = 0
        self.throttled = 0  # 429s answered
        self.api_calls = 0  # v3 requests answered (any status)
        self.token_calls = 0

    # --- Set-up helpers (tests, demo) ----------------------------------------------------------

    def add_company(
        self,
        realm: str,
        *,
        name: str = "Fake School Ltd",
        home_currency: str = "USD",
        multicurrency: bool = False,
        standard_data: bool = True,
    ) -> Company:
        with self.lock:
            company = Company(realm=realm, name=name, home_currency=home_currency, multicurrency=multicurrency)
            self.companies[realm] = company
            if self.consent_realm is None:
                self.consent_realm = realm
        if standard_data:
            self.add_item(realm, name="School fees", item_id="1")
            self.add_item(realm, name="Uniforms", item_id="2")
            self.add_account(realm, name="Checking", account_type="Bank", account_id="35")
            self.add_account(realm, name="Undeposited Funds", account_type="Other Current Asset", account_id="4")
            self.add_account(realm, name="Tuition income", account_type="Income", account_id="79")
        return company

    def _store(self, realm: str, entity: str, obj: dict, object_id: str | None = None) -> dict:
        with self.lock:
            company = self.companies[realm]
            obj = {**obj, "Id": object_id or company.new_id(), "SyncToken": "0", "domain": "QBO", "sparse": False}
            if object_id and object_id.isdigit():
                company.next_id = max(company.next_id, int(object_id) + 1)
            stamp = _now_iso()
            obj.setdefault("MetaData", {"CreateTime": stamp, "LastUpdatedTime": stamp})
            company.table(entity)[obj["Id"]] = obj
            return obj

    def add_item(self, realm: str, *, name: str, item_id: str | None = None, active: bool = True) -> dict:
        return self._store(realm, "Item", {"Name": name, "Type": "Service", "Active": active}, item_id)

    def add_account(self, realm: str, *, name: str, account_type: str, account_id: str | None = None) -> dict:
        return self._store(
            realm,
            "Account",
            {"Name": name, "AccountType": account_type, "Active": True, "FullyQualifiedName": name},
            account_id,
        )

    def add_customer(self, realm: str, display_name: str, customer_id: str | None = None, active: bool = True) -> dict:
        return self._store(
            realm,
            "Customer",
            {"DisplayName": display_name, "FullyQualifiedName": display_name, "Active": active, "Balance": Decimal(0)},
            customer_id,
        )

    def add_invoice(
        self,
        realm: str,
        *,
        customer_id: str,
        amount: Decimal | int | str,
        txn_date: str = "2025-01-15",
        due_date: str | None = None,
        doc_number: str | None = None,
        currency: str | None = None,
        invoice_id: str | None = None,
    ) -> dict:
        amount = Decimal(str(amount))
        company = self.companies[realm]
        return self._store(
            realm,
            "Invoice",
            {
                "CustomerRef": {"value": customer_id},
                "TxnDate": txn_date,
                "DueDate": due_date or txn_date,
                "DocNumber": doc_number or "",
                "TotalAmt": amount,
                "Balance": amount,
                "CurrencyRef": {"value": currency or company.home_currency},
                "Line": [
                    {
                        "Amount": amount,
                        "DetailType": "SalesItemLineDetail",
                        "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
                    }
                ],
            },
            invoice_id,
        )

    def issue_tokens(self, realm: str) -> tuple[str, str]:
        """A fresh grant for ``realm``, as if a user had just connected: (access, refresh)."""
        with self.lock:
            return self._issue(_Grant(realm))

    def set_refresh_token(self, realm: str, refresh_token: str) -> None:
        """Make a known refresh token valid for ``realm`` (the demo seeds one)."""
        with self.lock:
            self._refresh[refresh_token] = _Token(_Grant(realm), time.time() + self.refresh_token_seconds)

    # --- Inspection and fault injection --------------------------------------------------------

    def objects(self, realm: str, entity: str) -> list[dict]:
        with self.lock:
            return list(self.companies[realm].table(entity).values())

    def api_requests(self, realm: str | None = None) -> list[RecordedRequest]:
        prefix = f"/v3/company/{realm}/" if realm else "/v3/company/"
        return [request for request in self.requests if request.path.startswith(prefix)]

    def drop_next_create(self, count: int = 1, entity: str | None = None) -> None:
        """Store the next ``count`` creates (of ``entity``, or any), then drop the connection
        without answering: the client cannot know the create happened."""
        with self.lock:
            self._drop_creates.extend([entity] * count)

    def fail_next(self, count: int = 1, status: int = 503, path: str | None = None) -> None:
        """Answer the next ``count`` API requests (to ``path``, e.g. "salesreceipt", or any) with
        ``status`` without doing anything."""
        with self.lock:
            self._failures.extend([(status, path)] * count)

    def throttle_next(self, count: int = 1) -> None:
        with self.lock:
            self._throttles += count

    def index_now(self) -> None:
        with self.lock:
            for company in self.companies.values():
                company.unindexed.clear()

    def expire_access_tokens(self) -> None:
        with self.lock:
            for token in self._access.values():
                token.expires_at = 0

    def revoke_all(self) -> None:
        """The user disconnected the app in QuickBooks: every token stops working."""
        with self.lock:
            for token in [*self._access.values(), *self._refresh.values()]:
                token.grant.revoked = True

    def current_refresh_tokens(self, realm: str) -> list[str]:
        with self.lock:
            return [
                value
                for value, token in self._refresh.items()
                if token.current and not token.grant.revoked and token.grant.realm == realm
            ]

    # --- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = read_request(environ)
        if self.record_requests:
            with self.lock:
                self.requests.append(
                    RecordedRequest(request.method, request.path, request.query, request.headers, request.body)
                )
        base_url = f"http://{request.headers.get('Host', '127.0.0.1')}{environ.get('SCRIPT_NAME', '')}"
        try:
            status, headers, body = self.route(request, base_url)
        except _DropConnection:
            if _drop_socket(environ):
                # Whatever wsgiref now writes hits the closed socket; it ignores the broken pipe.
                start_response("200 OK", [("Content-Type", "application/json")])
                return [b""]
            status, headers, body = _json(504, {"detail": "gateway timeout (simulated drop)"})
        start_response(f"{status} {_REASONS.get(status, 'Status')}", list(headers.items()))
        return [body]

    def route(self, request: Request, base_url: str) -> Response:
        path = request.path
        if path in ("/.well-known/openid_configuration", "/.well-known/openid_sandbox_configuration",
                    "/.well-known/openid_configuration/", "/.well-known/openid_sandbox_configuration/"):  # fmt: skip
            return _json(200, self.discovery(base_url, browser_base_url=self.browser_base_url))
        if path == "/connect/oauth2":
            return self.authorize(request)
        if path == "/oauth2/v1/tokens/bearer":
            return self.token(request)
        if path == "/oauth2/v1/tokens/revoke":
            return self.revoke(request)
        match = re.fullmatch(r"/v3/company/([^/]+)/(.+)", path)
        if match:
            return self.api(request, match.group(1), match.group(2))
        return _json(404, {"detail": "not found"})



def build_demo_quickbooks(*, browser_base_url: str | None = None) -> FakeQuickBooks:
    """The company ``make run``'s demo school is connected to (``quickbooks_sync.demo``): a
    UGX company where Amina Nakato (STU-0001) owes two invoices and Brian Okello (STU-0002)
    owes nothing, so a payment from each shows both kinds of sync."""
    fake = FakeQuickBooks(browser_base_url=browser_base_url)
    fake.add_company(DEMO_REALM, name="Nile Gardens School (demo books)", home_currency="UGX")
    amina = fake.add_customer(DEMO_REALM, "Amina Nakato (STU-0001)")
    fake.add_customer(DEMO_REALM, "Brian Okello (STU-0002)")
    fake.add_invoice(DEMO_REALM, customer_id=amina["Id"], amount=60_000, txn_date="2025-01-10", doc_number="1001")
    fake.add_invoice(DEMO_REALM, customer_id=amina["Id"], amount=250_000, txn_date="2025-05-10", doc_number="1002")
    fake.set_refresh_token(DEMO_REALM, DEMO_REFRESH_TOKEN)
    return fake
