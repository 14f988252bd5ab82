"""Staff admin, one module per area. Every admin of a school-owned model is a
``SchoolScopedAdmin`` (``payments.admin.scoping``): staff see and touch only their schools' rows."""

from django.conf import settings
from django.contrib import admin

from payments.admin import accounts, api_tokens, core, ledger, payments, refunds, requests  # noqa: F401 - registers the admins

# The product's name where Django would say "Django administration"; "—" where it would say "None".
admin.site.site_header = settings.SITE_NAME
admin.site.site_title = settings.SITE_NAME
admin.site.index_title = "Staff"
admin.site.empty_value_display = "—"
