from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Running the service: health and readiness probes, Prometheus metrics, request ids in
    logs and Celery tasks, secret redaction in logs, and the webhook body retention job."""

    name = "ops"
