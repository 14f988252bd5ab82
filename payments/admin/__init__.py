"""Staff admin, one module per area. Every admin of a school-owned model is a
``SchoolScopedAdmin`` (``payments.admin.scoping``): staff see and touch only their schools' rows."""

from payments.admin import accounts, api_tokens, core, ledger, payments, refunds, requests  # noqa: F401 - registers the admins
