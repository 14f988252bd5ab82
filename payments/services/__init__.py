"""The writes of the payments domain, one module per job (HackSoft's services split as they grow):

- ``settlement``: provider events and the provider's API in, the payment folded out of its facts;
- ``batch``: many events settled in one transaction, what they share read and written once;
- ``facts``: the facts an event or an answer states, kept for a payment or waiting for it;
- ``finalize``: a success settles its payment request;
- ``mapping``: which student a payment is for;
- ``checkout``: "Pay now"; ``manual``: payments reported by a parent, reviewed by staff;
- ``janitor``: asking providers about payments not settled;
- ``refunds`` and ``refund_sync``: staff refunds, and keeping them in step with the ledger;
- ``notices``: pay links, reminders and receipts sent to parents;
- ``requests``: payment requests and CSV import; ``onboarding``: schools and provider accounts;
- ``paybill``: registering an M-Pesa paybill's URLs with Daraja; ``risk``: risk scores and clearing them;
- ``dummy``: the dummy provider's checkout page.

Service functions are keyword-only and named ``<thing>_<verb>``; the outermost write is one
transaction. The names below are re-exported so callers can say ``payments.services.<name>``;
each lives in the module named on its import line.
"""

from __future__ import annotations

from payments.services.batch import SettlementBatch  # noqa: F401
from payments.services.checkout import (  # noqa: F401
    CheckoutFailed,
    CheckoutRefused,
    CheckoutStarted,
    checkout_return_urls,
    payment_checkout_abandon,
    payment_checkout_start,
    payment_insert_with_reference,
)
from payments.services.dummy import (  # noqa: F401
    dummy_payment_simulate,
)
from payments.services.facts import (  # noqa: F401
    event_ids,
    fact_summary,
    facts_add,
    facts_adopt,
    facts_from_event,
    facts_from_status,
)
from payments.services.finalize import (  # noqa: F401
    FinalizeOutcome,
    payment_finalize,
)
from payments.services.janitor import (  # noqa: F401
    payment_status_recheck,
    payments_recheck_due,
)
from payments.services.manual import (  # noqa: F401
    ManualPaymentInvalid,
    ReviewError,
    manual_payment_review,
    manual_payment_submit,
)
from payments.services.mapping import (  # noqa: F401
    MappingRefused,
    payment_mapping_fail,
    payment_student_assign,
    payment_student_map,
    provider_students_learn,
    student_upsert,
)
from payments.services.notices import (  # noqa: F401
    NoticeDelivery,
    NoticeQueued,
    NoticeRefused,
    notice_deliver,
    notices_sweep,
    payment_receipt_get_or_create,
    payment_receipt_issue,
    payment_reminders_due,
    payment_request_send,
    school_today,
)
from payments.services.onboarding import (  # noqa: F401
    OnboardingError,
    account_create,
    account_rotate_secret,
    account_update,
    generate_webhook_secret,
    school_create,
)
from payments.services.paybill import (  # noqa: F401
    PaybillError,
    account_c2b_register,
)
from payments.services.refund_sync import (  # noqa: F401
    REFUND_REASON_MAX_CHARS,
    SAME_REFUND_AS,
    refund_adapter,
    refund_requests_sync,
)
from payments.services.refunds import (  # noqa: F401
    RefundInvalid,
    RefundRefused,
    RefundStarted,
    refund_request_create,
    refund_request_recheck,
    refund_request_resolve,
    refund_request_send,
    refund_requests_recheck_due,
)
from payments.services.requests import (  # noqa: F401
    CSV_COLUMNS,
    CSV_MAX_BYTES,
    CSV_MAX_ROWS,
    CSV_REQUIRED_COLUMNS,
    CsvImportResult,
    CsvRowError,
    PaymentRequestDraft,
    PaymentRequestInvalid,
    PaymentRequestStateError,
    payment_request_cancel,
    payment_request_create,
    payment_request_draft,
    payment_requests_create_many,
    payment_requests_import_csv,
)
from payments.services.risk import (  # noqa: F401
    payment_risk_rescore,
    payment_risk_update,
)
from payments.services.settlement import (  # noqa: F401
    RECHECKABLE_STATES,
    PaymentChange,
    RiskClearRefused,
    payment_event_apply,
    payment_fact_add,
    payment_lock,
    payment_offer_to_books_on_commit,
    payment_provider_status_apply,
    payment_risk_clear,
    payment_settle,
    recheck_time,
)
