from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from payments.models import ProviderAccount, School
        from webhooks.selectors import account_cache_clear

        # A saved account or school is seen by this process's next webhook at once (other
        # processes within WEBHOOK_ACCOUNT_CACHE_SECONDS).
        for model in (ProviderAccount, School):
            post_save.connect(account_cache_clear, sender=model, dispatch_uid=f"account-cache-{model.__name__}-save")
            post_delete.connect(account_cache_clear, sender=model, dispatch_uid=f"account-cache-{model.__name__}-del")
