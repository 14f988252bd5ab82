"""Provider-format webhook deliveries: what every provider's ``wire.py`` shares.

Each provider package has a ``wire.py`` that builds its webhooks in the provider's own format and
signs them the way the provider signs them. The fakes, the tests and ``manage.py simulate_webhook``
(``payments/simulation.py``) use them. The signing there is written from each provider's
documentation independently of the adapter's verification (and of the stripe SDK), so a test that
sends one of these through the endpoint checks our verification against the documented scheme,
not against itself.

Every ``providers/<slug>/wire.py`` defines (``tests/providers/test_packages.py`` checks it):

- ``EVENT_TYPES``: event type -> a function building that event's payload from ``Params``; the
  first is what the simulator sends when no ``--type`` is given;
- ``signed_delivery(payload, *, secret, payment_id=None) -> Delivery``: the payload (a dict, or
  bytes sent as they are) signed as the provider signs it for an account whose webhook secret is
  ``secret``; ``payment_id`` is the payment a callback answers, for a provider whose proof names
  it (M-Pesa's callback token);
- ``DEFAULT_CURRENCY``: the currency the simulator uses when none is given and the provider
  cannot take the school's (None: the school's);
- ``STARTED_CHECKOUTS_ONLY``: "" when a simulated event may be about a new payment; otherwise the
  provider only calls back about checkouts this service started (M-Pesa), the simulator sends each
  delivery to one of the account's open payments with a checkout id, and this is its message when
  there is none (``{school}`` is the school's code).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Params:
    """What a simulated event says. Amounts are ISO minor units; each builder writes them in
    its provider's own unit."""

    amount_minor: int = 150_000
    currency: str = "USD"
    reference: str = ""
    event_id: str = ""
    txn_id: str = ""
    checkout_id: str = ""
    student_id: str = ""
    refunded_minor: int = 0
    test_mode: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def uid(self, prefix: str) -> str:
        return self.event_id or f"{prefix}{uuid.uuid4().hex[:20]}"


def dumps(payload: dict) -> bytes:
    # Decimal amounts are written as JSON numbers, exactly.
    return json.dumps(payload, default=_json_default).encode()


def _json_default(value):
    if isinstance(value, Decimal):
        # A short decimal's float prints back as the same digits; whole amounts as integers.
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)


def hmac_hex(key: bytes, message: bytes, digest=hashlib.sha256) -> str:
    return hmac.new(key, message, digest).hexdigest()
