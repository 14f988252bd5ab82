from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_migrate, post_save

        from payments import checks  # noqa: F401 - registers the admin scoping check
        from payments.models import AggregatorAccount, School
        from payments.selectors import account_cache_clear

        # A saved account or school is seen by this process's next webhook at once (other
        # processes within WEBHOOK_ACCOUNT_CACHE_SECONDS).
        for model in (AggregatorAccount, School):
            post_save.connect(account_cache_clear, sender=model, dispatch_uid=f"account-cache-{model.__name__}-save")
            post_delete.connect(account_cache_clear, sender=model, dispatch_uid=f"account-cache-{model.__name__}-del")

        from payments.staff import staff_group_sync_after_migrate

        # No sender: the permissions of apps migrated after this one must exist first, and the
        # sync is idempotent and cheap.
        post_migrate.connect(staff_group_sync_after_migrate, dispatch_uid="payments-staff-group")
