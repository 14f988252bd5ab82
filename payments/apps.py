from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from payments import checks  # noqa: F401 - registers the admin scoping check
        from payments.staff import staff_group_sync_after_migrate

        # No sender: the permissions of apps migrated after this one must exist first, and the
        # sync is idempotent and cheap.
        post_migrate.connect(staff_group_sync_after_migrate, dispatch_uid="payments-staff-group")
