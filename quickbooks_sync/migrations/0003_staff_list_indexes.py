# The payment syncs in the list's order, of one school and of every school, read from an index
# instead of sorting every row; built concurrently so the sync's writes are not held back meanwhile.

from core.migration_operations import AddIndexOnline
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("payments", "0017_staff_list_indexes"),
        ("quickbooks_sync", "0002_ledger"),
    ]

    operations = [
        AddIndexOnline(
            model_name="qbopaymentsync",
            index=models.Index(fields=["school", "created_at", "id"], name="qbo_sync_school_created"),
        ),
        AddIndexOnline(
            model_name="qbopaymentsync",
            index=models.Index(fields=["created_at", "id"], name="qbo_sync_created"),
        ),
    ]
