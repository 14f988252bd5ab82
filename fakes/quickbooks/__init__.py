"""A fake QuickBooks Online over real sockets (``fake.FakeQuickBooks``): Intuit's OAuth endpoints
(``oauth``), the v3 accounting API (``api``) and its query language (``query``), per-company data
(``company``), and what they share (``wire``)."""

from fakes.quickbooks.company import Company
from fakes.quickbooks.fake import FakeQuickBooks, build_demo_quickbooks
from fakes.quickbooks.wire import (
    BATCH_MAX_ITEMS,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REALM,
    DEMO_REFRESH_TOKEN,
    LIMIT_BATCH_PER_MINUTE,
    LIMIT_CONCURRENT,
    LIMIT_PER_MINUTE,
    LIMIT_PER_SECOND,
)

__all__ = [
    "BATCH_MAX_ITEMS",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_REALM",
    "DEMO_REFRESH_TOKEN",
    "LIMIT_BATCH_PER_MINUTE",
    "LIMIT_CONCURRENT",
    "LIMIT_PER_MINUTE",
    "LIMIT_PER_SECOND",
    "Company",
    "FakeQuickBooks",
    "build_demo_quickbooks",
]
