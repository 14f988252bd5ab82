from django.core.management.base import BaseCommand, CommandError

from payments.services import OnboardingError, school_create


class Command(BaseCommand):
    help = "Create a school: create_school <code> <name> --currency <ISO 4217> [--time-zone <IANA name>]"

    def add_arguments(self, parser):
        parser.add_argument("code", help="Short lower-case code, sent by providers as X-School-Code")
        parser.add_argument("name")
        parser.add_argument("--currency", required=True, help="Default currency, e.g. UGX")
        parser.add_argument("--time-zone", dest="time_zone", help="IANA name, e.g. Africa/Kampala (default: SCHOOL_TIME_ZONE)")

    def handle(self, *args, code, name, currency, time_zone=None, **options):
        try:
            school = school_create(code=code, name=name, currency=currency, time_zone=time_zone)
        except OnboardingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Created school {school.code} ({school.name}), currency {school.currency}, time zone {school.time_zone}."
        )
