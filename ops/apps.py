from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Running the service: health and readiness probes, Prometheus metrics (HTTP, database,
    Celery and the domain's own), request ids in logs and Celery tasks, secret redaction in
    logs, error reporting, and the webhook body retention job."""

    name = "ops"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from ops.db import connection_opened

        connection_created.connect(connection_opened, dispatch_uid="ops-db-metrics")
