"""``manage.py create_api_token <username> [--expires-in-days N]``: make an API token and print it
once (only its digest is stored)."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from payments.api_tokens import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a staff user and print it (shown once; only a digest is kept)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(self, *args, username, expires_in_days, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1")
        token = api_token_create(user=user, expires_in=timedelta(days=expires_in_days) if expires_in_days else None)
        self.stdout.write(f"API token of {username} (shown once): {token}")
