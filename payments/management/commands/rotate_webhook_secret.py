from django.core.management.base import BaseCommand, CommandError

from payments.services import OnboardingError, account_rotate_secret


class Command(BaseCommand):
    help = (
        "Give a school's provider account a new webhook secret and print it; the old secret keeps "
        "verifying for the grace period. Paystack: pass the newly rolled secret key with --secret."
    )

    def add_arguments(self, parser):
        parser.add_argument("school_code")
        parser.add_argument("provider")
        parser.add_argument("--grace-hours", type=float, default=24.0, help="How long the old secret stays valid (default 24)")
        parser.add_argument("--secret", help="Use this new secret instead of generating one (required for Paystack)")

    def handle(self, *args, school_code, provider, grace_hours, secret, **options):
        try:
            account, new_secret = account_rotate_secret(
                school_code=school_code, provider=provider, new_secret=secret, grace_hours=grace_hours
            )
        except OnboardingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Rotated the {account.provider} webhook secret of school {account.school.code}.")
        if account.previous_secret_expires_at:
            self.stdout.write(f"The old secret keeps verifying until {account.previous_secret_expires_at:%Y-%m-%d %H:%M:%S %Z}.")
        else:
            self.stdout.write("The old secret no longer verifies.")
        if secret is None:
            # Shown once, for the provider's dashboard; stored encrypted, never printed again.
            self.stdout.write(f"New webhook secret (store it now, it is not shown again): {new_secret}")
