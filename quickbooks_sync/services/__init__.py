"""Writes of the QuickBooks sync: the entry point, the per-school sync, tokens, the connection.

How a payment reaches QuickBooks exactly once:

1. ``qbo_sync_request`` (called when a payment may have become ready: after webhook processing,
   through ``qbo_sync_offered``; by staff actions; by the backlog scan) makes sure a ready
   payment has its ``QboPaymentSync`` record (and a ``QboAdjustmentSync`` per later money
   movement: refunds, chargebacks), then wakes its school's sync after commit.
2. ``qbo_school_sync`` runs one *lane* per school (a Redis lock): it claims due records in
   rounds, resolves the students' customers (cached in ``QboCustomer``, else found by name or
   batch-created: customer names are unique in QuickBooks, so a batch can never duplicate one),
   reads the open invoices of a whole round in one query, then creates the documents in batch
   calls of up to 30 (a document alone as a single create with a deterministic ``requestid``). One lane per company keeps invoice balances consistent
   between rounds and fits Intuit's advice (docs/reference/quickbooks.md §4.1).
3. Before a create is sent its record is marked ``in_doubt`` with the exact body; after the
   answer it is ``synced`` with QuickBooks' id. A record found in doubt (a timeout, a dropped
   answer, a crash) is looked up in QuickBooks (by customer and date, recognised by the marker
   in its PrivateNote) before anything is sent again, and a resend repeats the same body under
   the same ``requestid``, which QuickBooks de-duplicates as a second guard (a batch's own
   ``requestid`` plays that part for its documents).

No database lock is held across a network call: records are claimed with a short
``SELECT ... FOR UPDATE SKIP LOCKED`` and written back in short transactions.

The modules, bottom up: ``lane`` (wake, claim, pause), ``tokens`` (the session and OAuth tokens),
``outcomes`` (what becomes of a record), ``sends`` (batch and single creates, look-ups),
``rounds`` (one round: customers, invoices, plans), ``sync`` (the entry
point and a school's run), ``connection`` (staff connect and configure), ``backlog`` (the scan).
"""

from quickbooks_sync.services.backlog import qbo_backlog_scan
from quickbooks_sync.services.connection import (
    SetupChoices,
    qbo_authorization_url,
    qbo_company_refresh,
    qbo_connection_authorize,
    qbo_connection_configure,
    qbo_connection_disconnect,
    qbo_setup_choices,
)
from quickbooks_sync.services.lane import qbo_school_resume
from quickbooks_sync.services.sync import qbo_school_sync, qbo_sync_offered, qbo_sync_request, qbo_sync_retry
from quickbooks_sync.services.tokens import (
    QboSession,
    qbo_connection_authorization_lost,
    qbo_tokens_keepalive,
    qbo_tokens_refresh,
)

__all__ = [
    "QboSession",
    "SetupChoices",
    "qbo_authorization_url",
    "qbo_backlog_scan",
    "qbo_company_refresh",
    "qbo_connection_authorization_lost",
    "qbo_connection_authorize",
    "qbo_connection_configure",
    "qbo_connection_disconnect",
    "qbo_school_resume",
    "qbo_school_sync",
    "qbo_setup_choices",
    "qbo_sync_offered",
    "qbo_sync_request",
    "qbo_sync_retry",
    "qbo_tokens_keepalive",
    "qbo_tokens_refresh",
]
