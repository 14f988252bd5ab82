from django.core.management.base import BaseCommand, CommandError

from payments.models import ProviderAccount
from payments.services import PaybillError, account_c2b_register


class Command(BaseCommand):
    help = (
        "Register a school's M-Pesa paybill validation and confirmation URLs with Daraja. Run it "
        "again after rotating the account's webhook secret: the URLs carry a token derived from it."
    )

    def add_arguments(self, parser):
        parser.add_argument("school_code")
        parser.add_argument(
            "--response-type", default="Completed", choices=["Completed", "Cancelled"],
            help="What M-Pesa does when the validation URL does not answer (default Completed)",
        )  # fmt: skip

    def handle(self, *args, school_code, response_type, **options):
        account = ProviderAccount.objects.filter(school__code=school_code.strip().lower(), provider="mpesa").first()
        if account is None:
            raise CommandError(f"school {school_code!r} has no mpesa account")
        try:
            summary = account_c2b_register(account_id=account.pk, response_type=response_type, actor_type="system", actor="cli")
        except PaybillError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(summary)
