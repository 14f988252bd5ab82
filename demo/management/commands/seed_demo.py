from django.core.management.base import BaseCommand

from demo.seed import demo_seed


class Command(BaseCommand):
    help = "Create or refresh the demo data (idempotent)."

    def handle(self, *args, **options):
        login = demo_seed()
        self.stdout.write(f"Demo data ready. Django admin login: {login.username} / {login.password}")
