from django.core.management.base import BaseCommand, CommandError

from ops.services import secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every secret stored encrypted (webhook secrets, API credentials, QuickBooks "
        "tokens) with the first key of FIELD_ENCRYPTION_KEYS, so older keys can be removed. Safe to "
        "run again or after an interruption: it rewrites only what is still on an older key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=200, help="Rows per transaction (default 200)")
        parser.add_argument(
            "--check",
            action="store_true",
            help="Write nothing; exit 1 if any value is still on an older key (run before removing it)",
        )

    def handle(self, *args, batch_size, check, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        report = secrets_reencrypt(
            batch_size=batch_size, check_only=check, progress=lambda line: self.stdout.write(line) if options["verbosity"] > 1 else None
        )
        for label, count in sorted(report.per_field.items()):
            if count:
                self.stdout.write(f"{label}: {count} {'on an older key' if check else 're-encrypted'}")
        verb = "still on an older key" if check else "re-encrypted"
        self.stdout.write(f"{report.checked} encrypted values checked, {report.rewritten} {verb}.")
        if report.changed_meanwhile:
            self.stdout.write(f"{report.changed_meanwhile} were saved anew by the service meanwhile (already on the newest key).")
        if report.undecryptable:
            raise CommandError(
                "No key in FIELD_ENCRYPTION_KEYS opens these values (was a key removed too early?): "
                + ", ".join(report.undecryptable)
            )
        if check and report.rewritten:
            raise CommandError(f"{report.rewritten} values are still on an older key: run reencrypt_secrets first.")
