"""What the fake QuickBooks shares: its demo keys, Intuit's limits, faults and JSON as Intuit writes it."""

from __future__ import annotations

import json
import re
import secrets
import socket
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from fakes.server import Response

DEMO_CLIENT_ID = "demo-qbo-client"
DEMO_CLIENT_SECRET = "demo-qbo-secret"
DEMO_REALM = "9130350000000001"
DEMO_REFRESH_TOKEN = "demo-qbo-refresh-token"

# The real per-company limits (docs/reference/quickbooks.md §4.1).
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
