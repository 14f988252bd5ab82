"""M-Pesa paybill (C2B) set-up: registering a school's validation and confirmation URLs with
Daraja (providers/mpesa/c2b.py says how paybill payments then arrive)."""

from __future__ import annotations

from payments.audit import audit_record
from payments.models import ProviderAccount
from providers.errors import ProviderError
from providers.registry import get_provider


class PaybillError(Exception):
    pass


def account_c2b_register(*, account_id: int, response_type: str = "Completed", actor_type: str, actor: str = "") -> str:
    """Register the account's C2B URLs for its paybill with Daraja; audited as
    ``paybill.registered``. ``response_type``: what M-Pesa does when our validation URL does not
    answer (``Completed`` takes the payment, ``Cancelled`` refuses it). Returns a summary;
    raises ``PaybillError`` with Daraja's or our reason."""
    if response_type not in ("Completed", "Cancelled"):
        raise PaybillError("response type must be Completed or Cancelled")
    account = ProviderAccount.objects.select_related("school").get(pk=account_id)
    if account.provider != "mpesa":
        raise PaybillError(f"{account} is not an M-Pesa account")
    try:
        answer = get_provider("mpesa").c2b_register_urls(account=account, response_type=response_type)
    except ProviderError as exc:
        raise PaybillError(exc.detail) from exc
    audit_record(
        action="paybill.registered", actor_type=actor_type, actor=actor, school_id=account.school_id, target=account,
        details={"shortcode": answer["shortcode"], "response_type": response_type},
    )  # fmt: skip
    return f"Registered paybill {answer['shortcode']} of {account.school.code} with Daraja ({answer['response'] or 'ok'})"
