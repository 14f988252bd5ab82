"""A fake QuickBooks Online: Intuit's OAuth 2.0 endpoints and the v3 accounting API, over real
sockets, so ``intuit-oauth`` and ``python-quickbooks`` run unpatched against it.

What it speaks (see ``shared/reference/quickbooks.md``; the section numbers below are that file's):

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

import base64
import json
import re
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlencode

from fakes.server import _REASONS, FakeApp, RecordedRequest, Request, Response, read_request

DEMO_CLIENT_ID = "demo-qbo-client"
DEMO_CLIENT_SECRET = "demo-qbo-secret"
DEMO_REALM = "9130350000000001"
DEMO_REFRESH_TOKEN = "demo-qbo-refresh-token"

# The real per-company limits (reference §4.1).
LIMIT_PER_MINUTE = 500
LIMIT_PER_SECOND = 10
LIMIT_CONCURRENT = 10
LIMIT_BATCH_PER_MINUTE = 40
BATCH_MAX_ITEMS = 30

_TXN_ENTITIES = {"Invoice", "Payment", "SalesReceipt", "RefundReceipt"}
_ENTITY_BY_PATH = {
    "customer": "Customer",
    "invoice": "Invoice",
    "payment": "Payment",
    "salesreceipt": "SalesReceipt",
    "refundreceipt": "RefundReceipt",
    "item": "Item",
    "account": "Account",
}


class _Fault(Exception):
    """A QBO fault: answered as the v3 ``Fault`` envelope."""

    def __init__(self, status: int, code: str, message: str, detail: str = "", fault_type: str = "ValidationFault"):
        super().__init__(message)
        self.status, self.code, self.message, self.detail, self.fault_type = status, code, message, detail, fault_type

    def body(self) -> dict:
        return {
            "Fault": {
                "Error": [{"Message": self.message, "Detail": self.detail, "code": self.code, "element": ""}],
                "type": self.fault_type,
            },
            "time": _now_iso(),
        }


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _decimal(value: Any, field_name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise _Fault(400, "2010", "Request has invalid or unsupported property", f"Property Name:{field_name}")
    if not number.is_finite():
        raise _Fault(400, "2010", "Request has invalid or unsupported property", f"Property Name:{field_name}")
    return number


_DEC_TOKEN = re.compile(r'"@@dec@@(-?[0-9]+(?:\.[0-9]+)?)@@"')


def _dumps(body: Any) -> bytes:
    """JSON with Decimals written as JSON numbers, exactly (QBO answers amounts as numbers)."""

    def convert(value):
        if isinstance(value, Decimal):
            return f"@@dec@@{format(value, 'f')}@@"
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    return _DEC_TOKEN.sub(r"\1", json.dumps(convert(body))).encode()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return (
        status,
        {"Content-Type": "application/json", "intuit_tid": secrets.token_hex(8), **(headers or {})},
        _dumps(body),
    )


# --- The query language (reference §2.4) ------------------------------------------------------

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<str>'(?:\\.|[^'\\])*')|(?P<op><=|>=|!=|=|<|>)|(?P<punct>[(),*])|(?P<word>[A-Za-z_][\w.]*)|(?P<num>-?\d+(?:\.\d+)?))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if not match or match.end() == position:
            raise _Fault(400, "4000", "Error parsing query", f'QueryParserError: Encountered " at position {position}')
        position = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append((kind, value))
    return tokens


@dataclass
class _Query:
    entity: str
    count: bool = False
    conditions: list[tuple[str, str, Any]] = field(default_factory=list)
    order_by: str | None = None
    descending: bool = False
    start: int = 1
    max_results: int = 100


def _parse_query(text: str) -> _Query:
    tokens = _tokenize(text)
    pos = 0

    def peek(offset=0):
        return tokens[pos + offset] if pos + offset < len(tokens) else ("end", "")

    def take(expected_kind=None, expected_value=None):
        nonlocal pos
        kind, value = peek()
        if expected_kind and kind != expected_kind:
            raise _Fault(
                400, "4000", "Error parsing query", f"QueryParserError: expected {expected_kind}, got {value!r}"
            )
        if expected_value and value.upper() != expected_value:
            raise _Fault(
                400, "4000", "Error parsing query", f"QueryParserError: expected {expected_value}, got {value!r}"
            )
        pos += 1
        return value

    def literal():
        kind, value = peek()
        if kind == "str":
            take()
            return value
        if kind == "num":
            take()
            return Decimal(value)
        if kind == "word" and value.lower() in ("true", "false"):
            take()
            return value.lower() == "true"
        raise _Fault(400, "4000", "Error parsing query", f"QueryParserError: unexpected {value!r}")

    take("word", "SELECT")
    query = _Query(entity="")
    if peek()[1] == "*":
        take()
    elif peek()[1].upper() == "COUNT":
        take()
        take("punct", "(")
        take("punct", "*")
        take("punct", ")")
        query.count = True
    else:
        raise _Fault(400, "4000", "Error parsing query", "QueryParserError: projections are not supported")
    while peek()[1] == ",":  # "SELECT *, Sku FROM Item" (python-quickbooks' Item.all)
        take()
        take("word")
    take("word", "FROM")
    query.entity = take("word")
    if peek()[1].upper() == "WHERE":
        take()
        while True:
            name = take("word")
            kind, op = peek()
            if kind == "op":
                take()
                query.conditions.append((name, op, literal()))
            elif op.upper() in ("IN", "LIKE"):
                take()
                if op.upper() == "IN":
                    take("punct", "(")
                    values = [literal()]
                    while peek()[1] == ",":
                        take()
                        values.append(literal())
                    take("punct", ")")
                    query.conditions.append((name, "IN", values))
                else:
                    query.conditions.append((name, "LIKE", literal()))
            else:
                raise _Fault(400, "4000", "Error parsing query", f"QueryParserError: unexpected {op!r}")
            if peek()[1].upper() == "AND":
                take()
                continue
            if peek()[1].upper() == "OR":
                raise _Fault(400, "4000", "Error parsing query", "QueryParserError: OR is not supported")
            break
    while peek()[0] != "end":
        keyword = take("word").upper()
        if keyword in ("ORDERBY", "ORDER"):
            if keyword == "ORDER":
                take("word", "BY")
            query.order_by = take("word")
            if peek()[1].upper() in ("ASC", "DESC"):
                query.descending = take().upper() == "DESC"
        elif keyword == "STARTPOSITION":
            query.start = int(take("num"))
        elif keyword == "MAXRESULTS":
            query.max_results = min(int(take("num")), 1000)
        else:
            raise _Fault(400, "4000", "Error parsing query", f"QueryParserError: unexpected {keyword!r}")
    return query


def _field_value(obj: dict, name: str) -> Any:
    value: Any = obj
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, dict) and "value" in value:
        value = value["value"]  # a reference (CustomerRef) compares by its id
    return value


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "IN":
        return any(_compare(actual, "=", item) for item in expected)
    if actual is None:
        return False
    if isinstance(actual, bool) or isinstance(expected, bool):
        return op == "=" and str(actual).lower() == str(expected).lower()
    numeric = re.compile(r"-?\d+(\.\d+)?$")
    if (
        isinstance(actual, (int, Decimal))
        or isinstance(expected, Decimal)
        or (numeric.match(str(actual)) and numeric.match(str(expected)))
    ):
        try:
            left, right = Decimal(str(actual)), Decimal(str(expected))
        except InvalidOperation:
            left, right = str(actual), str(expected)
    else:
        left, right = str(actual).lower(), str(expected).lower()
    if op == "LIKE":
        pattern = "^" + ".*".join(re.escape(part) for part in str(expected).lower().split("%")) + "$"
        return re.match(pattern, str(actual).lower()) is not None
    return {
        "=": left == right,
        "!=": left != right,
        "<": left < right,
        ">": left > right,
        "<=": left <= right,
        ">=": left >= right,
    }[op]


# --- Companies and their data ----------------------------------------------------------------


@dataclass
class Company:
    realm: str
    name: str
    home_currency: str = "USD"
    multicurrency: bool = False
    next_id: int = 1
    entities: dict[str, dict[str, dict]] = field(default_factory=dict)
    request_ids: dict[str, Response] = field(default_factory=dict)
    # Arrival times (the fake's scaled clock) of accepted API requests, and of batch calls.
    window: deque = field(default_factory=deque)
    batch_window: deque = field(default_factory=deque)
    # Documents a query does not see yet (``FakeQuickBooks.query_lag``).
    unindexed: set = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0
    max_per_second: int = 0
    max_per_minute: int = 0

    def table(self, entity: str) -> dict[str, dict]:
        return self.entities.setdefault(entity, {})

    def new_id(self) -> str:
        value = str(self.next_id)
        self.next_id += 1
        return value


@dataclass
class _Grant:
    realm: str
    revoked: bool = False


@dataclass
class _Token:
    grant: _Grant
    expires_at: float  # wall-clock seconds
    current: bool = True


class FakeQuickBooks(FakeApp):
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

    # --- OAuth ---------------------------------------------------------------------------------

    @staticmethod
    def discovery(base_url: str, *, browser_base_url: str | None = None) -> dict:
        return {
            "issuer": "https://oauth.platform.intuit.com/op/v1",
            # The one endpoint the user's browser visits (the consent screen).
            "authorization_endpoint": f"{browser_base_url or base_url}/connect/oauth2",
            "token_endpoint": f"{base_url}/oauth2/v1/tokens/bearer",
            "userinfo_endpoint": f"{base_url}/v1/openid_connect/userinfo",
            "revocation_endpoint": f"{base_url}/oauth2/v1/tokens/revoke",
            "jwks_uri": f"{base_url}/op/v1/jwks",
            "response_types_supported": ["code"],
            "scopes_supported": ["openid", "email", "profile", "address", "phone", "com.intuit.quickbooks.accounting"],
        }

    def authorize(self, request: Request) -> Response:
        query = {key: values[0] for key, values in request.query.items()}
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return _json(400, {"error": "invalid_request"})
        redirect = query.get("redirect_uri", "")
        with self.lock:
            declined, self.decline_next_consent = self.decline_next_consent, False
            realm = self.consent_realm
            if declined or realm is None:
                params = {"error": "access_denied", "state": query.get("state", "")}
            else:
                code = secrets.token_urlsafe(24)
                self._codes[code] = {"realm": realm, "redirect_uri": redirect, "used": False, "grant": None}
                params = {"code": code, "state": query.get("state", ""), "realmId": realm}
        return 302, {"Location": f"{redirect}?{urlencode(params)}"}, b""

    def _client_ok(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _issue(self, grant: _Grant) -> tuple[str, str]:
        access, refresh = "at-" + secrets.token_urlsafe(24), "rt-" + secrets.token_urlsafe(24)
        now = time.time()
        self._access[access] = _Token(grant, now + self.access_token_seconds)
        self._refresh[refresh] = _Token(grant, now + self.refresh_token_seconds)
        return access, refresh

    def _token_body(self, access: str, refresh: str) -> dict:
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": self.access_token_seconds,
            "x_refresh_token_expires_in": self.refresh_token_seconds,
        }

    def token(self, request: Request) -> Response:
        with self.lock:
            self.token_calls += 1
        if self.token_latency_seconds:
            time.sleep(self.token_latency_seconds)
        if request.method != "POST":
            return _json(405, {"error": "method_not_allowed"})
        if not self._client_ok(request):
            return _json(401, {"error": "invalid_client"})
        form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
        invalid = _json(400, {"error": "invalid_grant", "error_description": "Incorrect or invalid token"})
        with self.lock:
            if form.get("grant_type") == "authorization_code":
                code = self._codes.get(form.get("code", ""))
                if code is None or code["redirect_uri"] != form.get("redirect_uri"):
                    return invalid
                if code["used"]:
                    # Reference §1.3: exchanging a code twice invalidates what it issued.
                    if code["grant"] is not None:
                        code["grant"].revoked = True
                    return invalid
                code["used"] = True
                code["grant"] = _Grant(code["realm"])
                return _json(200, self._token_body(*self._issue(code["grant"])))
            if form.get("grant_type") == "refresh_token":
                token = self._refresh.get(form.get("refresh_token", ""))
                if token is None or not token.current or token.grant.revoked or token.expires_at < time.time():
                    return invalid
                access = "at-" + secrets.token_urlsafe(24)
                self._access[access] = _Token(token.grant, time.time() + self.access_token_seconds)
                if self.rotate_refresh_tokens:
                    token.current = False  # strict rotation: the used token never works again
                    refresh = "rt-" + secrets.token_urlsafe(24)
                    self._refresh[refresh] = _Token(token.grant, time.time() + self.refresh_token_seconds)
                else:
                    refresh = form["refresh_token"]
                    token.expires_at = time.time() + self.refresh_token_seconds
                return _json(200, self._token_body(access, refresh))
        return _json(400, {"error": "unsupported_grant_type"})

    def revoke(self, request: Request) -> Response:
        with self.lock:
            self.token_calls += 1
        if not self._client_ok(request):
            return _json(401, {"error": "invalid_client"})
        try:
            value = json.loads(request.body or b"{}").get("token", "")
        except ValueError:
            return _json(400, {"error": "invalid_request"})
        with self.lock:
            token = self._refresh.get(value) or self._access.get(value)
            if token is not None:
                token.grant.revoked = True
        return 200, {"Content-Type": "application/json"}, b""

    # --- The v3 API ------------------------------------------------------------------------------

    def _clock(self) -> float:
        return time.monotonic() * self.time_scale

    def _admit(self, company: Company, *, batch: bool) -> Response | None:
        """Count the request against the company's limits; a 429 if it is over one."""
        now = self._clock()
        while company.window and company.window[0] <= now - 60:
            company.window.popleft()
        while company.batch_window and company.batch_window[0] <= now - 60:
            company.batch_window.popleft()
        last_second = sum(1 for arrival in company.window if arrival > now - 1)
        over = (
            self._throttles > 0
            or len(company.window) >= self.per_minute
            or last_second >= self.per_second
            or company.in_flight >= self.concurrent
            or (batch and len(company.batch_window) >= self.batch_per_minute)
        )
        if over:
            self._throttles = max(0, self._throttles - 1)
            self.throttled += 1
            fault = _Fault(
                429,
                "3001",
                "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                "The request limit was reached. Try again later",
                "SERVICE",
            )
            return _json(429, fault.body())
        company.window.append(now)
        if batch:
            company.batch_window.append(now)
        company.in_flight += 1
        company.max_in_flight = max(company.max_in_flight, company.in_flight)
        company.max_per_second = max(company.max_per_second, last_second + 1)
        company.max_per_minute = max(company.max_per_minute, len(company.window))
        return None

    def api(self, request: Request, realm: str, rest: str) -> Response:
        auth = request.headers.get("Authorization", "")
        with self.lock:
            self.api_calls += 1
            token = self._access.get(auth[len("Bearer ") :]) if auth.startswith("Bearer ") else None
            company = self.companies.get(realm)
            if token is None or token.grant.revoked or token.expires_at < time.time() or token.grant.realm != realm:
                # Reference §2.3: 401 bodies use a lower-case envelope.
                detail = "Token expired" if token is not None and token.expires_at < time.time() else "Token invalid"
                return _json(401, {
                    "fault": {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                                         "detail": detail, "code": "3200"}], "type": "AUTHENTICATION"},
                    "requestId": secrets.token_hex(8), "time": _now_iso(),
                })  # fmt: skip
            if company is None:
                return _json(
                    403,
                    _Fault(403, "100", "General Authentication Error", "realm unknown", "AuthenticationFault").body(),
                )
            throttled = self._admit(company, batch=rest == "batch")
            if throttled is not None:
                return throttled
            segment = rest.split("/")[0]
            index = next((i for i, (_, path) in enumerate(self._failures) if path in (None, segment)), None)
            failure = self._failures.pop(index)[0] if index is not None else None
        try:
            delay = self.latency_by_path.get(segment, self.latency_seconds)
            if delay:
                time.sleep(delay)
            if failure:
                return (
                    _json(failure, {"detail": "simulated outage"})
                    if failure != 500
                    else _json(
                        500,
                        _Fault(500, "10000", "An application error has occurred", "simulated", "SystemFault").body(),
                    )
                )
            return self._api(request, company, rest)
        except _Fault as fault:
            return _json(fault.status, fault.body())
        finally:
            with self.lock:
                company.in_flight -= 1

    def _api(self, request: Request, company: Company, rest: str) -> Response:
        params = {key: values[0] for key, values in request.query.items()}
        if rest == "query":
            text = request.body.decode() if request.method == "POST" else params.get("query", "")
            return _json(200, {"QueryResponse": self.run_query(company, text), "time": _now_iso()})
        if rest == "preferences" and request.method == "GET":
            return _json(200, {"Preferences": {
                "CurrencyPrefs": {"HomeCurrency": {"value": company.home_currency},
                                  "MultiCurrencyEnabled": company.multicurrency},
                "Id": "1", "SyncToken": "0"}, "time": _now_iso()})  # fmt: skip
        if rest.startswith("companyinfo/"):
            return _json(
                200, {"CompanyInfo": {"Id": "1", "CompanyName": company.name, "Country": "UG"}, "time": _now_iso()}
            )
        if rest == "batch" and request.method == "POST":
            return self.batch(company, _loads(request.body))
        match = re.fullmatch(r"([a-z]+)(?:/(\d+))?", rest)
        if not match or match.group(1) not in _ENTITY_BY_PATH:
            raise _Fault(400, "500", "Unsupported Operation", f"Operation {rest} is not supported.", "ValidationFault")
        entity = _ENTITY_BY_PATH[match.group(1)]
        if match.group(2):
            with self.lock:
                obj = company.table(entity).get(match.group(2))
            if obj is None:
                raise _Fault(
                    400,
                    "610",
                    "Object Not Found",
                    "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.",
                )
            return _json(200, {entity: obj, "time": _now_iso()})
        if request.method != "POST" or params.get("operation"):
            raise _Fault(400, "500", "Unsupported Operation", "Only creates are supported by this fake.")
        request_id = params.get("requestid")
        if request_id and len(request_id) > 50:
            raise _Fault(
                400, "2050", "String length is either shorter or longer than supported by specification", "requestid"
            )
        with self.lock:
            cached = company.request_ids.get(request_id) if request_id and self.dedupe_request_ids else None
            if cached is not None:
                if self.request_id_replay == "fault600":
                    raise _Fault(
                        400, "600", "Duplicate Request ID", f"Request ID {request_id} already exists", "ValidationFault"
                    )
                return cached
            created = self.create(company, entity, _loads(request.body))
            response = _json(200, {entity: created, "time": _now_iso()})
            if request_id:
                company.request_ids[request_id] = response
            drop = any(item in (None, entity) for item in self._drop_creates)
            if drop:
                index = next(i for i, item in enumerate(self._drop_creates) if item in (None, entity))
                self._drop_creates.pop(index)
        if drop:
            raise _DropConnection()
        return response

    def run_query(self, company: Company, text: str) -> dict:
        query = _parse_query(text)
        with self.lock:
            rows = [
                row
                for row in company.table(query.entity).values()
                if (query.entity, row["Id"]) not in company.unindexed
            ]
        if query.entity in ("Customer", "Item", "Account") and not any(
            name == "Active" for name, _, _ in query.conditions
        ):
            rows = [row for row in rows if row.get("Active", True)]  # QBO hides inactive names by default
        for name, op, value in query.conditions:
            rows = [row for row in rows if _compare(_field_value(row, name), op, value)]
        if query.count:
            return {"totalCount": len(rows)}
        if query.order_by:
            rows.sort(key=lambda row: _sort_key(_field_value(row, query.order_by)), reverse=query.descending)
        else:
            rows.sort(key=lambda row: int(row["Id"]))
        page = rows[query.start - 1 : query.start - 1 + query.max_results]
        if not page:
            return {}
        return {query.entity: page, "startPosition": query.start, "maxResults": len(page)}

    def batch(self, company: Company, body: dict) -> Response:
        items = body.get("BatchItemRequest") or []
        if len(items) > BATCH_MAX_ITEMS:
            raise _Fault(400, "1040", "Batch size exceeds allowed limit", f"at most {BATCH_MAX_ITEMS} items")
        answers = []
        for item in items:
            entity = next((key for key in item if key in _ENTITY_BY_PATH.values()), None)
            try:
                if item.get("operation") != "create" or entity is None:
                    raise _Fault(400, "500", "Unsupported Operation", "Only creates are supported by this fake.")
                with self.lock:
                    created = self.create(company, entity, item[entity])
                answers.append({"bId": item.get("bId"), entity: created})
            except _Fault as fault:
                answers.append({"bId": item.get("bId"), "Fault": fault.body()["Fault"]})
        return _json(200, {"BatchItemResponse": answers, "time": _now_iso()})

    # --- Creates: what QBO checks before it accepts a document --------------------------------

    def _ref(self, company: Company, obj: dict, name: str, entity: str, *, required: bool) -> dict | None:
        ref = obj.get(name)
        value = ref.get("value") if isinstance(ref, dict) else None
        if not value:
            if required:
                raise _Fault(400, "2020", "Required param missing, need to supply the required value for the API",
                             f"Required parameter {name} is missing in the request")  # fmt: skip
            return None
        target = company.table(entity).get(str(value))
        if target is None or not target.get("Active", True):
            raise _Fault(
                400,
                "2500",
                "Invalid Reference Id",
                f"Invalid Reference Id : {entity} assigned to this transaction has been deleted. Before you can modify this transaction, you must restore {entity} (Id={value}).",
            )
        return target

    def _currency(self, company: Company, obj: dict) -> str:
        currency = (obj.get("CurrencyRef") or {}).get("value") or company.home_currency
        if currency != company.home_currency and not company.multicurrency:
            raise _Fault(400, "6000", "A business validation error has occurred while processing your request",
                         f"Business Validation Error: Multicurrency is off; {currency} is not the home currency.")  # fmt: skip
        return currency

    def create(self, company: Company, entity: str, obj: dict) -> dict:
        """Validate and store one document (the caller holds ``self.lock``)."""
        obj = {
            key: value for key, value in obj.items() if key not in ("Id", "SyncToken", "MetaData", "domain", "sparse")
        }
        if entity == "Customer":
            name = (obj.get("DisplayName") or "").strip()
            if not name or ":" in name:
                raise _Fault(400, "2010", "Request has invalid or unsupported property", "Property Name:DisplayName")
            for existing in company.table("Customer").values():
                if existing["DisplayName"].lower() == name.lower():
                    raise _Fault(400, "6240", "Duplicate Name Exists Error",
                                 f"The name supplied already exists. : Id={existing['Id']}")  # fmt: skip
            obj.update(DisplayName=name, FullyQualifiedName=name, Active=True, Balance=Decimal(0))
        elif entity == "Invoice":
            self._ref(company, obj, "CustomerRef", "Customer", required=True)
            total = sum((_decimal(line.get("Amount"), "Amount") for line in obj.get("Line", [])), Decimal(0))
            obj.update(TotalAmt=total, Balance=total, CurrencyRef={"value": self._currency(company, obj)})
            obj.setdefault("TxnDate", date.today().isoformat())
        elif entity == "Payment":
            customer = self._ref(company, obj, "CustomerRef", "Customer", required=True)
            self._ref(company, obj, "DepositToAccountRef", "Account", required=False)
            currency = self._currency(company, obj)
            total = _decimal(obj.get("TotalAmt"), "TotalAmt")
            if total <= 0:
                raise _Fault(400, "6000", "A business validation error has occurred while processing your request",
                             "Business Validation Error: The payment amount must be greater than zero.")  # fmt: skip
            applied, updates = Decimal(0), []
            for line in obj.get("Line", []):
                amount = line["Amount"] = _decimal(line.get("Amount"), "Line.Amount")
                for linked in line.get("LinkedTxn", []):
                    invoice = company.table("Invoice").get(str(linked.get("TxnId")))
                    if linked.get("TxnType") != "Invoice" or invoice is None:
                        raise _Fault(
                            400, "2500", "Invalid Reference Id", f"Invalid Reference Id : Invoice {linked.get('TxnId')}"
                        )
                    if invoice["CustomerRef"]["value"] != customer["Id"] or invoice["CurrencyRef"]["value"] != currency:
                        raise _Fault(400, "6000", "A business validation error has occurred while processing your request",
                                     f"Business Validation Error: Invoice {invoice['Id']} belongs to another customer or currency.")  # fmt: skip
                    already = sum((a for i, a in updates if i is invoice), Decimal(0))
                    if amount + already > invoice["Balance"]:
                        raise _Fault(400, "6000", "A business validation error has occurred while processing your request",
                                     f"Business Validation Error: The amount applied to invoice {invoice['Id']} exceeds its open balance.")  # fmt: skip
                    updates.append((invoice, amount))
                applied += amount
            if applied > total:
                raise _Fault(400, "6000", "A business validation error has occurred while processing your request",
                             "Business Validation Error: The applied amount exceeds the payment's total.")  # fmt: skip
            for invoice, amount in updates:
                invoice["Balance"] = invoice["Balance"] - amount
            obj.update(TotalAmt=total, UnappliedAmt=total - applied, CurrencyRef={"value": currency})
            obj.setdefault("TxnDate", date.today().isoformat())
        elif entity in ("SalesReceipt", "RefundReceipt"):
            self._ref(company, obj, "CustomerRef", "Customer", required=False)
            self._ref(company, obj, "DepositToAccountRef", "Account", required=entity == "RefundReceipt")
            currency = self._currency(company, obj)
            total = Decimal(0)
            for line in obj.get("Line", []):
                amount = _decimal(line.get("Amount"), "Line.Amount")
                detail = line.get("SalesItemLineDetail") or {}
                if line.get("DetailType") != "SalesItemLineDetail":
                    raise _Fault(400, "2010", "Request has invalid or unsupported property", "Property Name:DetailType")
                self._ref(company, detail, "ItemRef", "Item", required=True)
                line["Amount"] = amount
                qty, price = detail.get("Qty"), detail.get("UnitPrice")
                if qty not in (None, "", 0) and price not in (None, ""):
                    detail["Qty"], detail["UnitPrice"] = _decimal(qty, "Qty"), _decimal(price, "UnitPrice")
                    if detail["Qty"] * detail["UnitPrice"] != amount:
                        raise _Fault(400, "6070", "Amount is not equal to UnitPrice * Qty",
                                     f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount}")  # fmt: skip
                total += amount
            if total <= 0:
                raise _Fault(400, "6000", "A business validation error has occurred while processing your request",
                             "Business Validation Error: A transaction total must be greater than zero.")  # fmt: skip
            # QBO computes a receipt's total from its lines; a TotalAmt sent along is ignored.
            obj.update(TotalAmt=total, Balance=Decimal(0), CurrencyRef={"value": currency})
            obj.setdefault("TxnDate", date.today().isoformat())
        else:
            raise _Fault(400, "500", "Unsupported Operation", f"Creating {entity} is not supported by this fake.")
        if entity in _TXN_ENTITIES and not obj.get("TxnDate"):
            obj["TxnDate"] = date.today().isoformat()
        for key in ("DocNumber", "PrivateNote", "PaymentRefNum"):
            if obj.get(key) == "":
                obj.pop(key)
        object_id = company.new_id()
        stamp = _now_iso()
        stored = {**obj, "Id": object_id, "SyncToken": "0", "domain": "QBO", "sparse": False,
                  "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp}}  # fmt: skip
        company.table(entity)[object_id] = stored
        if entity in self.query_lag:
            company.unindexed.add((entity, object_id))
        return json.loads(_dumps(stored), parse_float=Decimal)


class _DropConnection(Exception):
    pass


def _drop_socket(environ) -> bool:
    """Close the client's connection without an answer. wsgiref keeps the socket behind
    ``wsgi.input``; wsgiref then ignores the broken pipe of its own answer."""
    try:
        sock = environ["wsgi.input"].raw._sock
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except (AttributeError, KeyError, OSError):
        return False


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}", parse_float=Decimal)
    except ValueError:
        raise _Fault(400, "2010", "Request has invalid or unsupported property", "body is not JSON")


def _sort_key(value: Any):
    if isinstance(value, (int, Decimal)):
        return (0, Decimal(value), "")
    return (1, Decimal(0), str(value or ""))


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
