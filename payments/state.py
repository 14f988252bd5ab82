"""Payment states, and how one is decided.

A payment's state is not moved by each event in turn: it is *derived* from the set of what is
known about its transaction (``payments.ledger``), so the order in which events arrive cannot
change it. The states:

- ``pending``, ``processing``: the provider has not settled the transaction yet;
- ``awaiting_review``: a parent reported a manual payment, staff have not checked it;
- ``succeeded``: the school has the money; ``partially_refunded`` / ``refunded`` when some or all
  of it went back; ``disputed`` while a dispute (chargeback) is open, ``charged_back`` once one
  was lost;
- ``failed``, ``cancelled``, ``expired``: no money moved (a success reported later still wins:
  money the provider confirms as received is never dropped).
"""

from __future__ import annotations

from core.status import PaymentStatus

# The outcome of the charge itself, before refunds and disputes are looked at. When sources
# disagree the higher rank wins, whatever the order they came in: a success outranks everything
# (money confirmed as received is never dropped), a provider's failure outranks our own
# cancellation or expiry, and any of those outranks "still open".
CHARGE_RANK: dict[str, int] = {
    PaymentStatus.PENDING: 0,
    PaymentStatus.PROCESSING: 1,
    PaymentStatus.AWAITING_REVIEW: 1,
    PaymentStatus.EXPIRED: 2,
    PaymentStatus.CANCELLED: 3,
    PaymentStatus.FAILED: 4,
    PaymentStatus.SUCCEEDED: 5,
}

# States in which the school received the money (some of it may have gone back since).
SETTLED_STATES = frozenset(
    {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
        PaymentStatus.DISPUTED,
        PaymentStatus.CHARGED_BACK,
    }
)
# States a payment can still leave without any money moving: the janitor keeps asking about them.
OPEN_STATES = frozenset({PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.AWAITING_REVIEW})
# A provider's transaction not settled yet.
IN_FLIGHT_STATES = (PaymentStatus.PENDING, PaymentStatus.PROCESSING)
