from django.core.management.base import BaseCommand, CommandError

from payments.services import OnboardingError
from payments.staff import STAFF_GROUP_NAME, staff_user_create


class Command(BaseCommand):
    help = "Give a school a staff login for Django admin: create_staff_user <school_code> <username>"

    def add_arguments(self, parser):
        parser.add_argument("school_code")
        parser.add_argument("username")
        parser.add_argument("--email", default="")

    def handle(self, *args, school_code, username, email, **options):
        try:
            user, password = staff_user_create(school_code=school_code, username=username, email=email)
        except OnboardingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{user.get_username()} is staff of {school_code} (group {STAFF_GROUP_NAME!r}).")
        if password:
            # Shown once, on the operator's terminal; never logged.
            self.stdout.write(f"Password (shown once): {password}")
