import pytest

from payments.state import ALLOWED_TRANSITIONS, PaymentStatus as S, can_transition


def test_every_state_has_a_rule():
    assert set(ALLOWED_TRANSITIONS) == set(S)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.PROCESSING),
        (S.PROCESSING, S.SUCCEEDED),
        (S.PROCESSING, S.FAILED),
        (S.PROCESSING, S.CANCELLED),
        (S.FAILED, S.PROCESSING),
        (S.SUCCEEDED, S.REFUNDED),
        (S.SUCCEEDED, S.PARTIALLY_REFUNDED),
        (S.PARTIALLY_REFUNDED, S.REFUNDED),
        (S.AWAITING_REVIEW, S.SUCCEEDED),
        (S.AWAITING_REVIEW, S.FAILED),
        # Confirmed money is never dropped, whatever was believed before.
        (S.FAILED, S.SUCCEEDED),
        (S.CANCELLED, S.SUCCEEDED),
        (S.EXPIRED, S.SUCCEEDED),
    ],
)
def test_allowed(current, target):
    assert can_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.SUCCEEDED, S.FAILED),
        (S.SUCCEEDED, S.PENDING),
        (S.SUCCEEDED, S.PROCESSING),
        (S.SUCCEEDED, S.CANCELLED),
        (S.REFUNDED, S.SUCCEEDED),
        (S.REFUNDED, S.PARTIALLY_REFUNDED),
        (S.PROCESSING, S.PENDING),
        (S.PENDING, S.REFUNDED),
        (S.FAILED, S.REFUNDED),
        (S.CANCELLED, S.FAILED),
    ],
)
def test_backwards_or_nonsense_is_refused(current, target):
    assert not can_transition(current, target)
