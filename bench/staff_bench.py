"""Staff pages at scale (not a test).

Seeds a fresh PostgreSQL database with ``--payments`` payments across ``--schools`` schools in
SQL (``INSERT ... SELECT generate_series``: a million rows in about a minute), with students,
payment requests, QuickBooks syncs, webhook events and audit entries, then times what staff open,
through Django's test client (the whole request: middleware, admin, templates), logged in as a
superuser (every school) and as the staff of one school:

- every admin list over the big tables (payments, webhook events, requests, QuickBooks syncs,
  the audit log), the payments list's page 2, a filter and a search;
- the dashboard and the API's payment list;
- the CSV export of ``--export-rows`` payments: time and peak Python memory (tracemalloc).

Each figure is the p50 and p95 of ``--repeat`` requests, after one warm-up request whose
queries are counted. The machine's load average is printed at the start and the end: the
figures mean little on a busy machine.

    .venv/bin/python bench/staff_bench.py [--payments 1000000] [--schools 50] [--repeat 15] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CURRENCIES = ("UGX", "KES", "TZS", "RWF", "USD")
ZONES = ("Africa/Kampala", "Africa/Nairobi", "Africa/Dar_es_Salaam", "Africa/Kigali", "UTC")
PROVIDERS = ("surepay", "mpesa", "stripe")
# A realistic spread: most payments succeed; the rest fail, wait, or were refunded or disputed.
STATUS_SQL = """CASE
    WHEN g % 100 < 78 THEN 'succeeded' WHEN g % 100 < 86 THEN 'failed' WHEN g % 100 < 90 THEN 'pending'
    WHEN g % 100 < 93 THEN 'cancelled' WHEN g % 100 < 95 THEN 'expired' WHEN g % 100 < 97 THEN 'refunded'
    WHEN g % 100 < 98 THEN 'partially_refunded' WHEN g % 100 < 99 THEN 'awaiting_review' ELSE 'disputed' END"""


def bench_env(args) -> dict:
    return {
        **os.environ,
        "APP_ENV": "test",
        "DEBUG": "false",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{args.database}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}",
        "LOG_LEVEL": "WARNING",
        "DB_CONN_MAX_AGE": "60",
    }


def database_exists(name: str) -> bool:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def prepare_database(args, env: dict) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)


# --- Seeding, in SQL --------------------------------------------------------------------------------


def insert_select(cursor, model, exprs: dict[str, str], from_sql: str, params: tuple = ()) -> int:
    """``INSERT INTO <model> (...) SELECT <exprs> FROM <from_sql>``: the columns not named take the
    model's own default (a constant), so a new NOT NULL column does not break the seed."""
    from django.db.models import NOT_PROVIDED

    columns, values, constants = [], [], []
    for field in model._meta.concrete_fields:
        if field.attname in exprs:
            columns.append(field.column)
            values.append(exprs[field.attname].replace("%", "%%"))  # a modulo is not a placeholder
        elif field.primary_key and field.get_internal_type() in ("AutoField", "BigAutoField"):
            continue
        elif field.primary_key:
            columns.append(field.column)
            values.append("gen_random_uuid()")
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            columns.append(field.column)
            values.append("now()")
        elif field.has_default() or field.db_default is not NOT_PROVIDED or not field.null:
            if field.db_default is not NOT_PROVIDED and not field.has_default():
                continue  # the database fills it
            columns.append(field.column)
            values.append("%s")
            constants.append(field.get_db_prep_save(field.get_default(), cursor.db))
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {from_sql}"
    cursor.execute(sql, [*constants, *params])
    return cursor.rowcount


def seed(args) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from payments.models import (
        AuditLog,
        Payment,
        PaymentRequest,
        ProviderAccount,
        School,
        StaffMembership,
        Student,
        WebhookEvent,
    )
    from payments.staff import staff_group_ensure
    from quickbooks_sync.models import QboPaymentSync

    n, schools = args.payments, args.schools
    students = max(50, n // schools // 40)  # about 40 payments a student
    requests = max(10, n // schools // 10)
    started = time.monotonic()
    with transaction.atomic():
        school_rows = School.objects.bulk_create(
            School(code=f"s{i:03d}", name=f"School {i}", currency=CURRENCIES[i % 5], time_zone=ZONES[i % 5])
            for i in range(schools)
        )
        ProviderAccount.objects.bulk_create(
            ProviderAccount(school=school, provider=provider, webhook_secret=f"bench-{school.code}-{provider}")
            for school in school_rows
            for provider in PROVIDERS
        )
        user_model = get_user_model()
        user_model.objects.create_superuser("bench-admin", "admin@example.com", "bench")
        staff = user_model.objects.create_user("bench-bursar", password="bench", is_staff=True)
        staff.groups.add(staff_group_ensure())
        StaffMembership.objects.create(user=staff, school=school_rows[0])
        with connection.cursor() as cursor:
            # Schools numbered 0..schools-1 and their accounts, for the joins below.
            cursor.execute(
                "CREATE TEMP TABLE bench_school AS SELECT s.id, row_number() OVER (ORDER BY s.id) - 1 AS n, "
                f"s.currency, s.code FROM {School._meta.db_table} s"
            )
            cursor.execute(
                "CREATE TEMP TABLE bench_account AS SELECT a.id, a.school_id, a.provider, "
                "row_number() OVER (PARTITION BY a.school_id ORDER BY a.id) - 1 AS n "
                f"FROM {ProviderAccount._meta.db_table} a"
            )
            insert_select(
                cursor, Student,
                {"school_id": "s.id", "student_number": "'STU-' || lpad(g::text, 6, '0')",
                 "full_name": "CASE WHEN g % 97 = 0 THEN '=HYPERLINK(\"x\")' ELSE 'Student ' || g END"},
                "bench_school s CROSS JOIN generate_series(0, %s) g", (students - 1,),
            )  # fmt: skip
            cursor.execute(
                "CREATE TEMP TABLE bench_student AS SELECT id, school_id, "
                f"row_number() OVER (PARTITION BY school_id ORDER BY id) - 1 AS n FROM {Student._meta.db_table}"
            )
            cursor.execute("CREATE INDEX ON bench_student (school_id, n)")
            insert_select(
                cursor, PaymentRequest,
                {"school_id": "s.id", "student_id": "st.id", "description": "'Term ' || (g % 3 + 1) || ' fees'",
                 "amount_minor": "(g % 40 + 10) * 10000", "currency": "s.currency",
                 "status": "CASE WHEN g % 17 = 0 THEN 'cancelled' ELSE 'open' END",
                 "cancelled_at": "CASE WHEN g % 17 = 0 THEN now() END",
                 "token": "md5(s.id || '-' || g)",
                 "created_at": "now() - make_interval(days => 365 - (g % 365))", "updated_at": "now()"},
                "bench_school s CROSS JOIN generate_series(0, %s) g "
                "JOIN bench_student st ON st.school_id = s.id AND st.n = g %% %s", (requests - 1, students),
            )  # fmt: skip
            cursor.execute(
                "CREATE TEMP TABLE bench_request AS SELECT id, school_id, "
                f"row_number() OVER (PARTITION BY school_id ORDER BY id) - 1 AS n FROM {PaymentRequest._meta.db_table}"
            )
            cursor.execute("CREATE INDEX ON bench_request (school_id, n)")
            # Payment g: school g % schools, one of its three accounts, a year of payments spread
            # evenly to now; 9 in 10 mapped to a student, 1 in 5 from a payment request.
            insert_select(
                cursor, Payment,
                {"id": "gen_random_uuid()", "school_id": "s.id", "account_id": "a.id", "provider": "a.provider",
                 "external_txn_id": "'TXN' || g", "reference": "CASE WHEN g % 5 = 0 THEN 'REF' || g END",
                 "amount_minor": "(g % 400 + 5) * 1000", "currency": "s.currency", "status": "st_",
                 "refunded_amount_minor": "CASE WHEN st_ = 'refunded' THEN (g % 400 + 5) * 1000 "
                 "WHEN st_ = 'partially_refunded' THEN 1000 ELSE 0 END",
                 "settled_at": "CASE WHEN st_ IN ('succeeded', 'refunded', 'partially_refunded', 'disputed') "
                 "THEN at_ + interval '2 minutes' END",
                 "student_id": "stu.id", "mapping_status": "CASE WHEN stu.id IS NULL THEN 'unmatched' ELSE 'mapped' END",
                 "provider_student_id": "CASE WHEN stu.id IS NULL THEN '-X' || g ELSE '' END",
                 "payment_request_id": "req.id", "method": "CASE WHEN g % 50 = 7 THEN 'bank_transfer' ELSE 'provider' END",
                 "manual_reference": "CASE WHEN g % 50 = 7 THEN '+BANK' || g ELSE '' END",
                 "status_changed_at": "at_", "created_at": "at_", "updated_at": "at_"},
                f"(SELECT g, {STATUS_SQL.replace('%', '%%')} AS st_, "
                "now() - make_interval(secs => ((%s - g) * 31.5e6 / %s)::float8) AS at_ "
                "FROM generate_series(0, %s) g) p "
                "JOIN bench_school s ON s.n = g %% %s "
                "JOIN bench_account a ON a.school_id = s.id AND a.n = (g / %s) %% 3 "
                "LEFT JOIN bench_student stu ON stu.school_id = s.id AND stu.n = (g / %s) %% %s AND g %% 10 <> 3 "
                "LEFT JOIN bench_request req ON req.school_id = s.id AND req.n = (g / %s) %% %s AND g %% 5 = 1",
                (n, n, n - 1, schools, schools, schools, students, schools, requests),
            )  # fmt: skip
            # A request that a payment paid says so (most of them).
            cursor.execute(
                f"UPDATE {PaymentRequest._meta.db_table} r SET status = 'paid', paid_payment_id = p.id, "
                "paid_at = p.settled_at FROM (SELECT DISTINCT ON (payment_request_id) payment_request_id, id, "
                f"settled_at FROM {Payment._meta.db_table} WHERE payment_request_id IS NOT NULL "
                "AND status = 'succeeded' ORDER BY payment_request_id, created_at) p "
                "WHERE r.id = p.payment_request_id AND r.status = 'open'"
            )
            # Books for the schools with QuickBooks (every other school): its succeeded payments.
            insert_select(
                cursor, QboPaymentSync,
                {"school_id": "p.school_id", "payment_id": "p.id", "status": "CASE WHEN p.amount_minor % 97000 = 0 "
                 "THEN 'failed' WHEN p.created_at > now() - interval '1 day' THEN 'pending' ELSE 'synced' END",
                 "realm_id": "'realm-' || p.school_id", "txn_type": "'Payment'",
                 "txn_id": "CASE WHEN p.created_at <= now() - interval '1 day' THEN p.external_txn_id ELSE '' END",
                 "txn_date": "p.created_at::date", "amount_minor": "p.amount_minor", "currency": "p.currency",
                 "created_at": "p.created_at + interval '5 minutes'", "updated_at": "p.created_at + interval '5 minutes'"},
                f"{Payment._meta.db_table} p JOIN bench_school s ON s.id = p.school_id "
                "WHERE s.n %% 2 = 0 AND p.status = 'succeeded'",
            )  # fmt: skip
            # One provider event for about every other payment (of every school), a failure now
            # and then; an audit entry for about one in five.
            insert_select(
                cursor, WebhookEvent,
                {"account_id": "p.account_id", "external_event_id": "'evt_' || p.external_txn_id",
                 "event_type": "'payment.' || p.status", "payment_id": "p.id",
                 "status": "CASE WHEN p.amount_minor % 89000 = 0 THEN 'failed' ELSE 'processed' END",
                 "raw_body": "'{}'", "received_at": "p.created_at + interval '1 minute'"},
                f"{Payment._meta.db_table} p WHERE hashtext(p.external_txn_id) %% 2 = 0",
            )  # fmt: skip
            insert_select(
                cursor, AuditLog,
                {"created_at": "p.created_at + interval '3 minutes'", "school_id": "p.school_id",
                 "actor_type": "'system'", "action": "'payment.settled'", "target_type": "'payment'",
                 "target_id": "p.id::text", "details": "'{}'::jsonb"},
                f"{Payment._meta.db_table} p WHERE hashtext(p.external_txn_id) %% 5 = 0",
            )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"seeded {n:,} payments, {schools} schools, {students * schools:,} students, "
          f"{requests * schools:,} requests in {time.monotonic() - started:.0f} s", flush=True)  # fmt: skip


# --- Measuring --------------------------------------------------------------------------------------


def fetch(call) -> bytes:
    """The whole response: a streamed one is read to its end (its queries run as it streams)."""
    response = call()
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}")
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


def measure(label: str, call, repeat: int) -> dict:
    from django.db import connection

    # Counted by a wrapper: the query log is cleared when each request starts.
    queries = []
    started = time.perf_counter()
    with connection.execute_wrapper(lambda execute, sql, *rest: queries.append(sql) or execute(sql, *rest)):
        fetch(call)
    # With no repeat (a page too slow to time often) the counted request is the figure.
    times = [] if repeat else [(time.perf_counter() - started) * 1000]
    for _ in range(repeat):
        started = time.perf_counter()
        fetch(call)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    print(f"  {label}: p50 {statistics.median(times):.0f} ms, {len(queries)} queries", file=sys.stderr, flush=True)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"view": label, "p50": statistics.median(times), "p95": p95, "queries": len(queries)}


def measure_export(label: str, client, url: str, params: dict, repeat: int) -> dict:
    """The export: its time, its peak Python memory and its row count (tracemalloc slows Python
    down, so the peak is taken on one request apart from the timed ones)."""
    result = measure(label, lambda: client.get(url, params), repeat)
    tracemalloc.start()
    response = client.get(url, params)
    lines = sum(chunk.count(b"\n") for chunk in response.streaming_content)  # never joined: memory
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result.update(rows=lines - 1, peak_kib=peak // 1024)
    return result


def run(args) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from payments.api_tokens import api_token_create
    from payments.models import Payment, School

    results = []
    first_school = School.objects.order_by("pk").first()
    # The first day from which the export holds about --export-rows of that school's payments.
    export_from = (
        Payment.objects.filter(school=first_school).order_by("-created_at")
        .values_list("created_at", flat=True)[args.export_rows - 1]
    )  # fmt: skip
    for who in ("bench-admin", "bench-bursar"):
        user = get_user_model().objects.get(username=who)
        client = Client()
        client.force_login(user)
        api = Client(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)}")
        scope = "superuser" if user.is_superuser else "1 school"
        lists = {
            "payments": "admin:payments_payment_changelist",
            "webhook events": "admin:payments_webhookevent_changelist",
            "requests": "admin:payments_paymentrequest_changelist",
            "qbo payment syncs": "admin:quickbooks_sync_qbopaymentsync_changelist",
            "audit log": "admin:payments_auditlog_changelist",
        }
        for name, url_name in lists.items():
            url = reverse(url_name)
            results.append({"who": scope, **measure(name, lambda url=url: client.get(url), args.repeat)})
        url = reverse("admin:payments_payment_changelist")
        for name, params in (
            ("payments page 2", {"p": "2"}),
            ("payments status=failed", {"status__exact": "failed"}),
            ("payments search", {"q": "Student 1234"}),
        ):
            results.append({"who": scope, **measure(name, lambda p=params: client.get(url, p), args.repeat)})
        if not args.no_dashboard:
            dashboard = measure("dashboard", lambda: client.get(reverse("admin-dashboard")), args.dashboard_repeat)
            results.append({"who": scope, **dashboard})
        results.append({"who": scope, **measure("API payments", lambda: api.get(reverse("api-payments")), args.repeat)})
        params = {"school": str(first_school.pk), "created_at__gte": export_from.isoformat()}
        export = measure_export("CSV export", client, reverse("admin:payments_payment_export"), params, args.repeat)
        results.append({"who": scope, **export})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--schools", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per view")
    parser.add_argument(
        "--dashboard-repeat",
        type=int,
        default=0,
        help="timed dashboards after the first (each reconciles every settled payment: minutes at 1M)",
    )
    parser.add_argument("--no-dashboard", action="store_true")
    parser.add_argument("--export-rows", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="reuse the seeded database if it exists")
    parser.add_argument("--database", default="sp_staff_bench")
    parser.add_argument("--redis-db", type=int, default=11)
    args = parser.parse_args()

    load_start = os.getloadavg()
    env = bench_env(args)
    reuse = args.keep and database_exists(args.database)
    if not reuse:
        prepare_database(args, env)
    else:  # the code may have new migrations (indexes) since it was seeded
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    if not reuse:
        seed(args)
    results = run(args)
    load_end = os.getloadavg()

    print(f"\nStaff pages at {args.payments:,} payments, {args.schools} schools ({args.repeat} requests each)")
    print(f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
          f"at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} ({os.cpu_count()} CPUs)")  # fmt: skip
    print(f"{'who':11}{'view':25}{'p50 ms':>9}{'p95 ms':>9}{'queries':>9}  notes")
    for r in results:
        notes = f"{r['rows']:,} rows, peak {r['peak_kib']:,} KiB" if "rows" in r else ""
        print(f"{r['who']:11}{r['view']:25}{r['p50']:>9.0f}{r['p95']:>9.0f}{r['queries']:>9}  {notes}")


if __name__ == "__main__":
    main()
