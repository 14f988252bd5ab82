from django.core.management.base import BaseCommand, CommandError

from payments.selectors import account_webhook_url
from payments.services import OnboardingError, account_create


def _credential(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise CommandError(f"--credential takes NAME=VALUE, got {text!r}")
    return name.strip(), value


class Command(BaseCommand):
    help = "Connect a school to a payment provider and print its webhook URL and secret."

    def add_arguments(self, parser):
        parser.add_argument("school_code")
        parser.add_argument("provider", help="Provider slug, e.g. surepay, stripe, paystack, mpesa")
        parser.add_argument("--secret", help="Webhook secret; a strong one is generated when omitted")
        parser.add_argument("--api-key", default="", help="The provider's secret API key (Paystack: also its webhook key)")
        parser.add_argument(
            "--credential",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="Other provider credentials, repeatable (M-Pesa: consumer_key, consumer_secret, shortcode, passkey)",
        )
        parser.add_argument("--test-mode", action="store_true", help="Use the provider's test keys/URLs")

    def handle(self, *args, school_code, provider, secret, api_key, credential, test_mode, **options):
        credentials = dict(_credential(item) for item in credential)
        try:
            account, webhook_secret = account_create(
                school_code=school_code,
                provider=provider,
                webhook_secret=secret,
                api_key=api_key,
                credentials=credentials,
                test_mode=test_mode,
            )
        except OnboardingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Created {account.provider} account for school {account.school.code}.")
        self.stdout.write(f"Webhook URL: {account_webhook_url(account=account)}")
        if secret is None and webhook_secret != api_key:
            # Shown once: it is stored encrypted and never printed again. A secret the operator
            # gave (or an API key that doubles as one) is never echoed.
            self.stdout.write(f"Webhook secret (store it now, it is not shown again): {webhook_secret}")
