"""manage.py reconcile [--school CODE] [--since YYYY-MM-DD] [--json]: the ledger against QuickBooks.

Exit status 0 when the books follow the ledger exactly, 1 when something differs (for cron and
monitoring), 2 on bad input."""

from __future__ import annotations

import json as jsonlib
from dataclasses import asdict
from datetime import date, datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.money import format_minor
from payments.models import School
from quickbooks_sync.selectors import reconciliation


class Command(BaseCommand):
    help = (
        "For each school and currency, the ledger's settled net against what is in QuickBooks; lists every "
        "payment whose documents do not add up to its net, and payments not final after their last check."
    )

    def add_arguments(self, parser):
        parser.add_argument("--school", help="Only this school (its code)")
        parser.add_argument("--since", help="Only payments settled on or after this day (YYYY-MM-DD)")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON")

    def handle(self, *args, school=None, since=None, json=False, **options):
        schools = School.objects.all()
        if school:
            schools = schools.filter(code=school.strip().lower())
            if not schools.exists():
                raise CommandError(f"unknown school {school!r}", returncode=2)
        start = None
        if since:
            try:
                start = timezone.make_aware(datetime.combine(date.fromisoformat(since), time.min))
            except ValueError as exc:
                raise CommandError(f"--since must be a date (YYYY-MM-DD), got {since!r}", returncode=2) from exc
        report = reconciliation(schools=schools, since=start)
        if json:
            self.stdout.write(_json_dumps(report))
        else:
            self._print(report)
        if report.differences:
            raise SystemExit(1)

    def _print(self, report) -> None:
        if not report.schools:
            self.stdout.write("No settled payments.")
        for row in report.schools:
            books = format_minor(row.books_minor, row.currency) if row.connected else "not connected"
            self.stdout.write(
                f"{row.school_code} {row.currency}: {row.payments} payments, ledger "
                f"{format_minor(row.ledger_net_minor, row.currency)}, QuickBooks {books}, "
                f"{row.difference_count} differ"
            )
            for difference in row.differences:
                self.stdout.write(
                    f"  payment {difference.payment_id} ({difference.status}): net "
                    f"{format_minor(difference.net_minor, row.currency)}, in QuickBooks "
                    f"{format_minor(difference.books_minor, row.currency)}: {difference.reason}"
                )
        if report.not_final:
            self.stdout.write(f"{len(report.not_final)} payments not final after their last check:")
            for item in report.not_final:
                self.stdout.write(f"  payment {item.payment_id} ({item.status}): {item.reason}")
        if report.waiting_facts:
            self.stdout.write(f"{report.waiting_facts} refund or dispute reports wait for their payment.")
        self.stdout.write("Differences: " + str(report.differences))


def _json_dumps(report) -> str:
    return jsonlib.dumps({**asdict(report), "differences": report.differences}, indent=2)
