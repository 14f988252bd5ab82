"""The v3 accounting API of the fake (docs/reference/quickbooks.md §2-§4): limits, queries, batch,
and the checks QuickBooks makes before it accepts a document."""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import date
from decimal import Decimal

from fakes.quickbooks.company import Company
from fakes.quickbooks.query import _compare, _field_value, _parse_query
from fakes.quickbooks.wire import (
    _ENTITY_BY_PATH,
    _TXN_ENTITIES,
    BATCH_MAX_ITEMS,
    _decimal,
    _DropConnection,
    _dumps,
    _Fault,
    _json,
    _loads,
    _now_iso,
    _sort_key,
)
from fakes.server import Request, Response


class AccountingApi:
    """The v3 API routes of ``FakeQuickBooks``."""

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
                # docs/reference/quickbooks.md §2.3: 401 bodies use a lower-case envelope.
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
            return self.batch(company, _loads(request.body), request_id=params.get("requestid"))
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
            cached = self._replayed(company, request_id)
            if cached is not None:
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

    def batch(self, company: Company, body: dict, *, request_id: str | None = None) -> Response:
        """Items run one after the other and a fault of one does not stop the others (§6.5). A
        batch ``requestid`` is at most 36 characters, and its item ids at most 10 (§3)."""
        items = body.get("BatchItemRequest") or []
        if len(items) > BATCH_MAX_ITEMS:
            raise _Fault(400, "1040", "Batch size exceeds allowed limit", f"at most {BATCH_MAX_ITEMS} items")
        if request_id and (len(request_id) > 36 or any(len(str(item.get("bId", ""))) > 10 for item in items)):
            raise _Fault(
                400, "2050", "String length is either shorter or longer than supported by specification", "requestid"
            )
        with self.lock:
            cached = self._replayed(company, request_id)
        if cached is not None:
            return cached
        answers, entities = [], set()
        for item in items:
            entity = next((key for key in item if key in _ENTITY_BY_PATH.values()), None)
            try:
                if item.get("operation") != "create" or entity is None:
                    raise _Fault(400, "500", "Unsupported Operation", "Only creates are supported by this fake.")
                with self.lock:
                    created = self.create(company, entity, item[entity])
                answers.append({"bId": item.get("bId"), entity: created})
                entities.add(entity)
            except _Fault as fault:
                answers.append({"bId": item.get("bId"), "Fault": fault.body()["Fault"]})
        response = _json(200, {"BatchItemResponse": answers, "time": _now_iso()})
        with self.lock:
            if request_id:
                company.request_ids[request_id] = response
            # ``drop_next_create``: the documents are stored, the answer never arrives.
            index = next((i for i, wanted in enumerate(self._drop_creates) if wanted is None or wanted in entities), None)
            if index is not None and entities:
                self._drop_creates.pop(index)
        if index is not None and entities:
            raise _DropConnection()
        return response

    # --- Creates: what QBO checks before it accepts a document --------------------------------

    def _replayed(self, company: Company, request_id: str | None) -> dict | None:
        """Intuit's answer to a request id it has seen: the first answer again, or fault 600 when
        the fake is set to refuse replays. None for a new id. Called with the lock held."""
        cached = company.request_ids.get(request_id) if request_id and self.dedupe_request_ids else None
        if cached is not None and self.request_id_replay == "fault600":
            raise _Fault(400, "600", "Duplicate Request ID", f"Request ID {request_id} already exists", "ValidationFault")
        return cached

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
