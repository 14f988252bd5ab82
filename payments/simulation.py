"""Correctly signed, provider-format webhooks sent to a running server: what
``manage.py simulate_webhook`` does, for integrators, demos and load tests.

The deliveries are built and signed by the provider's ``wire`` module (``providers/<slug>/wire.py``,
found through the registry; each provider's documented scheme), with the account's own secret read
from the database, so the server under test verifies them exactly as it verifies the provider's.
Each delivery is a new event about a new payment (fresh event id and reference), except for a
provider that only calls back about checkouts this service started (M-Pesa's STK pushes): those go
to the account's open payments with a checkout id, one each.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from core.money import MoneyError, currency_code, parse_major_amount
from payments.models import ProviderAccount
from payments.state import OPEN_STATES
from providers.errors import UnknownProvider
from providers.registry import provider_part, provider_slugs
from providers.wire import Delivery, Params


class SimulationError(Exception):
    """Bad input; the message is one line for the operator."""


@dataclass
class Summary:
    url: str
    event_type: str
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def lines(self, provider: str) -> list[str]:
        rate = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        out = [f"Sent {self.sent} {provider} webhooks ({self.event_type}) to {self.url} in {self.elapsed_s:.2f} s ({rate:.1f}/s)"]
        for status, count in sorted(self.statuses.items(), key=lambda item: str(item[0])):
            out.append(f"  {status}: {count}")
        if self.latencies_ms:
            ordered = sorted(self.latencies_ms)
            p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
            out.append(
                f"Latency ms: p50 {statistics.median(ordered):.1f}  p95 {p95:.1f}  max {ordered[-1]:.1f}"
            )
        return out


def simulation_plan(
    *,
    account: ProviderAccount,
    event_type: str | None,
    amount: str | None,
    currency: str | None,
    invalid_signature: bool,
) -> tuple[str, Callable[[int], Delivery]]:
    """The event type to send and a function building the n-th signed delivery."""
    provider = account.provider
    try:
        wire = provider_part(provider, "wire")
    except UnknownProvider:
        wire = None
    if wire is None:  # a provider since removed from the registry
        raise SimulationError(f"simulate_webhook does not know {provider!r} (known: {', '.join(provider_slugs())})")
    builders = wire.EVENT_TYPES
    event_type = event_type or next(iter(builders))
    if event_type not in builders:
        raise SimulationError(f"unknown --type {event_type!r} for {provider} (known: {', '.join(builders)})")
    try:
        code = currency_code(currency or wire.DEFAULT_CURRENCY or account.school.currency)
        amount_minor = parse_major_amount(amount or "1500", code)
    except MoneyError as exc:
        raise SimulationError(str(exc)) from exc
    secret = account.webhook_secret if not invalid_signature else "wrong-" + secrets.token_urlsafe(16)
    build = builders[event_type]

    if wire.STARTED_CHECKOUTS_ONLY:
        payments = list(
            account.payments.filter(provider_checkout_id__isnull=False, status__in=OPEN_STATES)
            .order_by("-created_at")
            .values_list("pk", "provider_checkout_id", "amount_minor")
        )
        if not payments:
            raise SimulationError(wire.STARTED_CHECKOUTS_ONLY.format(school=account.school.code))

        def make(n: int) -> Delivery:
            payment_id, checkout_id, paid_minor = payments[n % len(payments)]
            params = Params(amount_minor=paid_minor, currency=wire.DEFAULT_CURRENCY, checkout_id=checkout_id)
            return wire.signed_delivery(build(params), secret=secret, payment_id=payment_id)

        return event_type, make

    def make(n: int) -> Delivery:
        params = Params(
            amount_minor=amount_minor,
            currency=code,
            reference=f"SIM-{uuid.uuid4().hex[:16]}",
            test_mode=account.test_mode,
            refunded_minor=amount_minor,
        )
        return wire.signed_delivery(build(params), secret=secret)

    return event_type, make


def simulation_run(
    *,
    url: str,
    make: Callable[[int], Delivery],
    event_type: str,
    count: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    concurrency: int = 8,
    timeout: float = 10.0,
) -> Summary:
    """Send ``count`` deliveries one after another, or ``rate`` per second for ``duration``
    seconds from ``concurrency`` threads. Bounded in count and time; stops by itself."""
    summary = Summary(url=url, event_type=event_type)
    lock = threading.Lock()
    client = httpx.Client(timeout=timeout)

    def send(n: int) -> None:
        delivery = make(n)
        started = time.perf_counter()
        try:
            response = client.post(
                url, content=delivery.body, params=delivery.query or None,
                headers={"Content-Type": "application/json", **delivery.headers},
            )
            status: int | str = response.status_code
        except httpx.HTTPError as exc:
            status = f"error {type(exc).__name__}"
        elapsed_ms = (time.perf_counter() - started) * 1000
        with lock:
            summary.sent += 1
            summary.statuses[status] += 1
            if isinstance(status, int):
                summary.latencies_ms.append(elapsed_ms)

    started = time.perf_counter()
    try:
        if rate is None:
            for n in range(count or 1):
                send(n)
        else:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                for n, due in enumerate(_schedule(rate, duration or 1.0)):
                    delay = due - (time.perf_counter() - started)
                    if delay > 0:
                        time.sleep(delay)
                    pool.submit(send, n)
    finally:
        client.close()
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _schedule(rate: float, duration: float) -> Iterator[float]:
    total = int(rate * duration)
    for n in range(total):
        yield n / rate
