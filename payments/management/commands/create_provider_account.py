from django.core.management.base import BaseCommand, CommandError

from payments.services import OnboardingError, account_create


class Command(BaseCommand):
    help = "Connect a school to a payment provider and print its webhook URL and secret."

    def add_arguments(self, parser):
        parser.add_argument("school_code")
        parser.add_argument("provider", help="Provider slug, e.g. surepay")
        parser.add_argument("--secret", help="Webhook secret; a strong one is generated when omitted")
        parser.add_argument("--api-key", default="", help="The provider's secret API key")
        parser.add_argument("--test-mode", action="store_true", help="Use the provider's test keys/URLs")

    def handle(self, *args, school_code, provider, secret, api_key, test_mode, **options):
        try:
            account, webhook_secret = account_create(
                school_code=school_code,
                provider=provider,
                webhook_secret=secret,
                api_key=api_key,
                test_mode=test_mode,
            )
        except OnboardingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Created {account.provider} account for school {account.school.code}.")
        self.stdout.write(f"Webhook URL: /api/webhooks/{account.provider}/{account.school.code}")
        if secret is None:
            # Shown once: it is stored encrypted and never printed again.
            self.stdout.write(f"Webhook secret (store it now, it is not shown again): {webhook_secret}")
