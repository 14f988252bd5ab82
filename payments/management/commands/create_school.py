from django.core.management.base import BaseCommand, CommandError

from payments.services import OnboardingError, school_create


class Command(BaseCommand):
    help = "Create a school: create_school <code> <name> --currency <ISO 4217>"

    def add_arguments(self, parser):
        parser.add_argument("code", help="Short lower-case code, sent by providers as X-School-Code")
        parser.add_argument("name")
        parser.add_argument("--currency", required=True, help="Default currency, e.g. UGX")

    def handle(self, *args, code, name, currency, **options):
        try:
            school = school_create(code=code, name=name, currency=currency)
        except OnboardingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Created school {school.code} ({school.name}), currency {school.currency}.")
