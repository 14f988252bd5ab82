"""The ledger of one payment: its state and amounts, folded from what is known about its transaction.

Providers do not deliver events in order, and retries, the broker sweep and parallel workers
reorder them further. So no event moves a payment by itself: every report (a webhook, the
provider's API, a staff decision, our own expiry) is kept as a *fact*, and the payment is the
deterministic fold of its set of facts. Any order of the same facts gives the same payment; the
same fact twice changes nothing.

- **Charge facts** report the transaction's outcome. The highest rank wins
  (``payments.state.CHARGE_RANK``): a success outranks everything. The amount received is the
  success's, taken from the most trusted source (the provider's API, then a signed webhook or a
  staff member, then our own system).
- **Refund facts** are keyed by the provider's refund id (by the event, for providers that have
  none). One refund reported many times, by several event types, counts once; its latest status
  is the highest rank: pending, then succeeded, then failed (a refund can fail after it
  succeeded, and the money comes back).
- **Refunded-total facts** are a provider's cumulative total at a moment (Stripe's
  ``amount_refunded``, an API snapshot). The latest one is a floor under the keyed refunds; what it
  holds beyond them (succeeded or still pending) is an unattributed refund.
- **Dispute facts** are keyed by the dispute's id: open, then won or lost. An open dispute marks
  the payment ``disputed``; a lost one is money out (a chargeback).

Refunds and disputes only count once the charge succeeded: one that arrives first waits for it.
Reports that cannot all be true (two amounts received, refunds beyond the payment) are never
dropped: the fold keeps a deterministic answer and lists the conflict for staff.

This module is pure: no database, no clock. ``payments.services`` loads the facts and stores
the result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from django.db import models

from core.money import format_minor
from core.status import PaymentStatus
from payments.state import CHARGE_RANK


class FactKind(models.TextChoices):
    CHARGE = "charge", "Charge outcome"
    REFUND = "refund", "Refund"
    REFUNDED_TOTAL = "refunded_total", "Refunded total"
    DISPUTE = "dispute", "Dispute"


class FactSource(models.TextChoices):
    PROVIDER_API = "provider_api", "Provider's API"
    PROVIDER_EVENT = "provider_event", "Provider's webhook"
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System"


class RefundStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class DisputeStatus(models.TextChoices):
    OPEN = "open", "Open"
    WON = "won", "Won"
    LOST = "lost", "Lost"


# Which report of an amount to believe when two disagree.
SOURCE_RANK = {
    FactSource.PROVIDER_API: 3,
    FactSource.PROVIDER_EVENT: 2,
    FactSource.STAFF: 2,
    FactSource.SYSTEM: 1,
}
REFUND_RANK = {RefundStatus.PENDING: 0, RefundStatus.SUCCEEDED: 1, RefundStatus.FAILED: 2}
# A dispute reported both won and lost counts as lost (and is a conflict): the books must never
# show money the school may not have.
DISPUTE_RANK = {DisputeStatus.OPEN: 0, DisputeStatus.WON: 1, DisputeStatus.LOST: 2}

# The key of the refund movement for refunded totals no keyed refund explains.
UNATTRIBUTED = "unattributed"


class FactLike(Protocol):
    kind: str
    key: str
    status: str
    amount_minor: int | None
    currency: str
    occurred_at: datetime
    source: str


@dataclass(frozen=True)
class Movement:
    """One money movement the books must show: ``amount_minor`` is positive for money in (the
    charge), negative for money out (a refund, a chargeback). ``key`` names it stably:
    ``charge``, ``refund:<refund key>``, ``chargeback:<dispute key>``."""

    key: str
    amount_minor: int


@dataclass(frozen=True)
class Ledger:
    status: str
    currency: str
    received_minor: int  # 0 unless the charge succeeded
    refunded_minor: int
    refund_pending_minor: int
    disputed_minor: int  # held by open disputes
    charged_back_minor: int
    movements: tuple[Movement, ...]
    conflicts: tuple[str, ...]
    # Refunds or disputes known for a charge that has not succeeded (yet): they wait for it.
    waiting: bool

    @property
    def net_minor(self) -> int:
        """What the school keeps: received, less refunds and chargebacks. The books' total."""
        return sum(movement.amount_minor for movement in self.movements)


def ledger_fold(facts: Iterable[FactLike], *, initial_status: str, currency: str) -> Ledger:
    """Fold a payment's facts into its state and amounts. Deterministic in the *set* of facts.

    ``currency`` is the payment's until it succeeds; then it is the currency the provider
    reports received (``Ledger.currency``), and money out in any other currency is not counted.
    """
    facts = list(facts)
    conflicts: list[str] = []
    charges = [fact for fact in facts if fact.kind == FactKind.CHARGE]
    status = max([initial_status, *(fact.status for fact in charges)], key=lambda value: (CHARGE_RANK[value], value))
    if status == PaymentStatus.SUCCEEDED:
        received, currency = _received(charges, currency, conflicts)
    usable = []
    for fact in facts:
        if fact.kind != FactKind.CHARGE and fact.amount_minor is not None and fact.currency and fact.currency != currency:
            conflicts.append(f"a {fact.kind} report in {fact.currency} for a {currency} payment was not counted")
        else:
            usable.append(fact)
    refunds = _refunds(usable, conflicts)
    disputes = _disputes(usable, conflicts)
    snapshot_total = _refunded_total_floor(usable, refunds)

    money_reported = any(state == RefundStatus.SUCCEEDED for state, _ in refunds.values()) or bool(disputes) or (
        snapshot_total > 0
    )
    if status != PaymentStatus.SUCCEEDED:
        if money_reported and status == PaymentStatus.FAILED:
            conflicts.append("refunds or disputes are reported for a payment the provider says failed")
        return Ledger(
            status=status,
            currency=currency,
            received_minor=0,
            refunded_minor=0,
            refund_pending_minor=0,
            disputed_minor=0,
            charged_back_minor=0,
            movements=(),
            conflicts=tuple(sorted(set(conflicts))),
            waiting=money_reported,
        )

    movements = [Movement("charge", received)]
    keyed_refunded = 0
    for key in sorted(refunds):
        state, amount = refunds[key]
        if state == RefundStatus.SUCCEEDED:
            movements.append(Movement(f"refund:{key}", -amount))
            keyed_refunded += amount
    # A provider's total may already hold refunds it still calls pending (Stripe counts a refund
    # in amount_refunded from its creation): those explain that part of it, and count once done.
    keyed_pending = sum(amount for state, amount in refunds.values() if state == RefundStatus.PENDING)
    if snapshot_total > keyed_refunded + keyed_pending:
        movements.append(Movement(f"refund:{UNATTRIBUTED}", keyed_refunded + keyed_pending - snapshot_total))
    for key in sorted(disputes):
        state, amount = disputes[key]
        if state == DisputeStatus.LOST:
            movements.append(Movement(f"chargeback:{key}", -amount))
    movements = _within_received(movements, received, currency, conflicts)

    refunded = -sum(m.amount_minor for m in movements if m.key.startswith("refund:"))
    charged_back = -sum(m.amount_minor for m in movements if m.key.startswith("chargeback:"))
    disputed = sum(amount for state, amount in disputes.values() if state == DisputeStatus.OPEN)
    if disputed:
        status = PaymentStatus.DISPUTED
    elif charged_back:
        status = PaymentStatus.CHARGED_BACK
    elif refunded and refunded >= received:
        status = PaymentStatus.REFUNDED
    elif refunded:
        status = PaymentStatus.PARTIALLY_REFUNDED
    return Ledger(
        status=status,
        currency=currency,
        received_minor=received,
        refunded_minor=refunded,
        refund_pending_minor=sum(amount for state, amount in refunds.values() if state == RefundStatus.PENDING),
        disputed_minor=disputed,
        charged_back_minor=charged_back,
        movements=tuple(movements),
        conflicts=tuple(sorted(set(conflicts))),
        waiting=False,
    )


def _best(facts: list[FactLike]) -> list[FactLike]:
    """The facts of the most trusted source among ``facts``."""
    top = max(SOURCE_RANK[fact.source] for fact in facts)
    return [fact for fact in facts if SOURCE_RANK[fact.source] == top]


def _received(charges: list[FactLike], currency: str, conflicts: list[str]) -> tuple[int, str]:
    """The amount and currency received, as the most trusted source reports the success."""
    successes = [fact for fact in charges if fact.status == PaymentStatus.SUCCEEDED and fact.amount_minor is not None]
    if not successes:
        conflicts.append("the payment succeeded but no amount was reported")
        return 0, currency
    trusted = _best(successes)
    # The provider's latest word when it changed its mind; a tie is broken by the amount, so the
    # choice never depends on arrival order.
    chosen = max(trusted, key=lambda fact: (fact.occurred_at, fact.currency, fact.amount_minor))
    reported = sorted({(fact.currency, fact.amount_minor) for fact in successes})
    if len(reported) > 1:
        conflicts.append(
            "different amounts were reported received: "
            + ", ".join(format_minor(amount, code) for code, amount in reported)
            + f"; {format_minor(chosen.amount_minor, chosen.currency)} is counted"
        )
    return chosen.amount_minor, chosen.currency or currency


def _refunds(facts: list[FactLike], conflicts: list[str]) -> dict[str, tuple[str, int]]:
    """Refund key -> (its status, its amount)."""
    grouped: dict[str, list[FactLike]] = defaultdict(list)
    for fact in facts:
        if fact.kind == FactKind.REFUND and fact.amount_minor is not None:
            grouped[fact.key].append(fact)
    refunds = {}
    for key, group in grouped.items():
        state = max((fact.status for fact in group), key=lambda value: REFUND_RANK[value])
        amounts = {fact.amount_minor for fact in _best(group)}
        if len(amounts) > 1:
            conflicts.append(f"refund {key} was reported with different amounts: {sorted(amounts)}")
        refunds[key] = (state, max(amounts))
    return refunds


def _disputes(facts: list[FactLike], conflicts: list[str]) -> dict[str, tuple[str, int]]:
    grouped: dict[str, list[FactLike]] = defaultdict(list)
    for fact in facts:
        if fact.kind == FactKind.DISPUTE and fact.amount_minor is not None:
            grouped[fact.key].append(fact)
    disputes = {}
    for key, group in grouped.items():
        states = {fact.status for fact in group}
        if {DisputeStatus.WON, DisputeStatus.LOST} <= states:
            conflicts.append(f"dispute {key} was reported both won and lost; it counts as lost")
        state = max(states, key=lambda value: DISPUTE_RANK[value])
        disputes[key] = (state, max(fact.amount_minor for fact in _best(group)))
    return disputes


def _refunded_total_floor(facts: list[FactLike], refunds: dict[str, tuple[str, int]]) -> int:
    """The latest cumulative refunded total a provider reported, less the keyed refunds that
    failed after it was taken (their money came back)."""
    totals = [fact for fact in facts if fact.kind == FactKind.REFUNDED_TOTAL and fact.amount_minor is not None]
    if not totals:
        return 0
    latest = max(totals, key=lambda fact: (fact.occurred_at, fact.amount_minor))
    failed_since = 0
    for key, (state, amount) in refunds.items():
        if state != RefundStatus.FAILED:
            continue
        failures = [
            fact for fact in facts
            if fact.kind == FactKind.REFUND and fact.key == key and fact.status == RefundStatus.FAILED
        ]  # fmt: skip
        if all(fact.occurred_at > latest.occurred_at for fact in failures):
            failed_since += amount
    return max(0, latest.amount_minor - failed_since)


def _within_received(
    movements: list[Movement], received: int, currency: str, conflicts: list[str]
) -> list[Movement]:
    """Money out can never exceed money in: trim the excess from the last movements (a
    deterministic order) and report it, so the books never go below zero."""
    out = -sum(m.amount_minor for m in movements[1:])
    excess = out - received
    if excess <= 0:
        return movements
    conflicts.append(
        f"refunds and chargebacks of {format_minor(out, currency)} exceed the "
        f"{format_minor(received, currency)} received; only {format_minor(received, currency)} is counted"
    )
    trimmed = list(movements)
    for index in range(len(trimmed) - 1, 0, -1):
        if excess <= 0:
            break
        take = min(excess, -trimmed[index].amount_minor)
        trimmed[index] = Movement(trimmed[index].key, trimmed[index].amount_minor + take)
        excess -= take
    return [movement for movement in trimmed if movement.amount_minor or movement.key == "charge"]
