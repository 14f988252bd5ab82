# Each staff list in its default order, for one school and for every school (a superuser), read
# from an index instead of sorting every row it could show. Built concurrently: on a table of a
# million payments a plain CREATE INDEX would hold back every webhook's insert until it finished.

from core.migration_operations import AddIndexOnline
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("payments", "0016_school_time_zone"),
    ]

    operations = [
        AddIndexOnline(
            model_name="payment",
            index=models.Index(fields=["school", "created_at", "id"], name="payment_school_created"),
        ),
        AddIndexOnline(
            model_name="payment",
            index=models.Index(fields=["created_at", "id"], name="payment_created"),
        ),
        AddIndexOnline(
            model_name="payment",
            index=models.Index(fields=["status", "created_at", "id"], name="payment_status_created"),
        ),
        AddIndexOnline(
            model_name="paymentrequest",
            index=models.Index(fields=["school", "created_at", "id"], name="payment_request_school_created"),
        ),
        AddIndexOnline(
            model_name="paymentrequest",
            index=models.Index(fields=["created_at", "id"], name="payment_request_created"),
        ),
        AddIndexOnline(
            model_name="webhookevent",
            index=models.Index(fields=["received_at", "id"], name="webhook_event_received"),
        ),
        AddIndexOnline(
            model_name="auditlog",
            index=models.Index(fields=["school", "created_at", "id"], name="audit_log_school_created"),
        ),
        AddIndexOnline(
            model_name="transactionfact",
            index=models.Index(fields=["school", "occurred_at", "id"], name="fact_school_occurred"),
        ),
    ]
