from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from payments.models import ProviderAccount
from payments.simulation import SimulationError, simulation_plan, simulation_run


class Command(BaseCommand):
    help = (
        "Send correctly signed, provider-format webhooks to a running server (signed with the "
        "account's secret from the database) and print a summary of the answers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--provider", required=True)
        parser.add_argument("--school", required=True, help="School code")
        parser.add_argument("--type", dest="event_type", help="Event type (default: the provider's success event)")
        parser.add_argument("--amount", help="Amount in major units, e.g. 1500 or 1500.50 (default 1500)")
        parser.add_argument("--currency", help="ISO code (default: the school's, or one the provider takes)")
        parser.add_argument("--invalid-signature", action="store_true", help="Sign with a wrong secret (expect 401)")
        parser.add_argument("--count", type=int, help="Send N deliveries one after another (default 1)")
        parser.add_argument("--rate", type=float, help="Deliveries per second (with --duration)")
        parser.add_argument("--duration", type=float, help="Seconds to send at --rate")
        parser.add_argument("--concurrency", type=int, default=8, help="Sending threads with --rate (default 8)")
        parser.add_argument("--url", help=f"Server base URL (default PUBLIC_BASE_URL, {settings.PUBLIC_BASE_URL})")

    def handle(self, *args, provider, school, event_type, amount, currency, invalid_signature, count, rate, duration,
               concurrency, url, **options):
        if count is not None and rate is not None:
            raise CommandError("use either --count or --rate with --duration")
        if (rate is None) != (duration is None):
            raise CommandError("--rate and --duration go together")
        if count is not None and not 1 <= count <= 100_000:
            raise CommandError("--count must be between 1 and 100000")
        if rate is not None and not (0 < rate <= 2000 and 0 < duration <= 3600):
            raise CommandError("--rate must be in (0, 2000] and --duration in (0, 3600]")
        provider = provider.strip().lower()
        account = ProviderAccount.objects.select_related("school").filter(
            provider=provider, school__code=school.strip().lower(), active=True
        ).first()
        if account is None:
            raise CommandError(f"school {school!r} has no active {provider} account")
        try:
            kind, make = simulation_plan(
                account=account, event_type=event_type, amount=amount, currency=currency, invalid_signature=invalid_signature
            )
        except SimulationError as exc:
            raise CommandError(str(exc)) from exc
        target = f"{(url or settings.PUBLIC_BASE_URL).rstrip('/')}/api/webhooks/{provider}/{account.school.code}"
        summary = simulation_run(
            url=target, make=make, event_type=kind, count=count, rate=rate, duration=duration, concurrency=concurrency
        )
        for line in summary.lines(provider):
            self.stdout.write(line)
