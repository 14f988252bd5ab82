import logging

from django.apps import AppConfig


class QuickbooksSyncConfig(AppConfig):
    name = "quickbooks_sync"
    verbose_name = "QuickBooks Online"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # requests-oauthlib logs the whole token (access and refresh) and the Authorization
        # header at DEBUG ("Adding token ... to request"). Secrets are never logged, whatever
        # LOG_LEVEL says.
        for name in ("requests_oauthlib", "oauthlib"):
            logging.getLogger(name).setLevel(logging.WARNING)
