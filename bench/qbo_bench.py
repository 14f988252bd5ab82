"""QuickBooks sync benchmark (not a test).

Syncs succeeded payments of one school (one QuickBooks company) through the fake QuickBooks
with Intuit's real per-company limits: 500 requests a minute, 10 a second, 10 at once, 40
batch calls a minute. The fake runs in its own process; time in it is scaled (``--time-scale
2``: its minute lasts 30 s, and our limiter's clock is scaled the same way through
``QBO_LIMIT_TIME_SCALE``), and every API answer takes ``--latency-ms`` of that scaled time, like
Intuit's. (Our limiter's jitter margin, ``QBO_LIMIT_MARGIN_MS``, is real time and does not
scale: at high scales it makes the per-second window the binding one.) The sync itself runs as in production: Celery workers (prefork) on the Redis broker
and a fresh PostgreSQL database; every payment is handed to ``qbo_sync_request`` as webhook
processing does.

Two phases of ``--payments`` each:

1. cold: none of the students has a QuickBooks customer id yet; half exist in QuickBooks
   already (found by name), half are created (batch calls);
2. steady: the same students pay again; customers are known.

For each phase it reports the QuickBooks API calls per payment (by kind), the 429s received,
the wall time against the floor the limit allows (calls / 500 per minute, in real seconds),
and checks the books: one document per payment, the exact total, no duplicate.

    .venv/bin/python bench/qbo_bench.py [--payments 2000] [--students 400] [--time-scale 2]
                                        [--latency-ms 250] [--workers 2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REALM = "9130357000000042"
CLIENT_ID, CLIENT_SECRET = "bench-qbo-client", "bench-qbo-secret"
REFRESH_TOKEN = "bench-refresh-token"
LIMIT_PER_MINUTE = 500


def student_name(i: int) -> tuple[str, str]:
    return f"STU-{i:05d}", f"Student Number{i}"


# --- The fake, in its own process ---------------------------------------------------------------


def _fake_main(port: int, students: int, time_scale: float, latency_ms: float, ready) -> None:
    sys.path.insert(0, str(REPO))
    from fakes.quickbooks import FakeQuickBooks
    from fakes.server import PrefixRouter, json_response, serve_in_thread

    fake = FakeQuickBooks(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        time_scale=time_scale,
        latency_seconds=latency_ms / 1000 / time_scale,
    )
    fake.add_company(REALM, name="Bench School books", home_currency="UGX")
    fake.set_refresh_token(REALM, REFRESH_TOKEN)
    rng = random.Random(7)
    for i in range(students):
        number, name = student_name(i)
        if i % 2 == 0:  # half the students are customers in QuickBooks already
            customer = fake.add_customer(REALM, f"{name} ({number})")
            if rng.random() < 0.6:  # most of those owe an invoice or two
                for _ in range(rng.choice((1, 2))):
                    fake.add_invoice(
                        REALM,
                        customer_id=customer["Id"],
                        amount=rng.randrange(100, 600) * 1000,
                        txn_date=f"2025-0{rng.randrange(1, 9)}-10",
                    )

    def stats(environ, start_response):
        with fake.lock:
            requests = list(fake.requests)
            company = fake.companies[REALM]
            documents = {
                entity: list(company.table(entity).values())
                for entity in ("Customer", "Invoice", "Payment", "SalesReceipt")
            }
            snapshot = {
                "api_calls": fake.api_calls,
                "throttled": fake.throttled,
                "token_calls": fake.token_calls,
                "max_per_second": company.max_per_second,
                "max_per_minute": company.max_per_minute,
                "max_in_flight": company.max_in_flight,
            }
        kinds = Counter()
        prefix = f"/v3/company/{REALM}/"
        for request in requests:
            if request.path.startswith(prefix):
                kinds[f"{request.method} {request.path[len(prefix) :].split('/')[0]}"] += 1
        markers = Counter(
            str(doc.get("PrivateNote", "")).rsplit(" ", 1)[-1]
            for entity in ("Payment", "SalesReceipt")
            for doc in documents[entity]
        )
        snapshot.update(
            by_kind=dict(kinds),
            documents={entity: len(docs) for entity, docs in documents.items()},
            total={
                entity: str(sum((Decimal(str(d["TotalAmt"])) for d in documents[entity]), Decimal(0)))
                for entity in ("Payment", "SalesReceipt")
            },
            duplicates=sum(count - 1 for count in markers.values() if count > 1),
            open_balance=str(sum((Decimal(str(d["Balance"])) for d in documents["Invoice"]), Decimal(0))),
        )
        status, headers, body = json_response(200, snapshot)
        start_response("200 OK", list(headers.items()))
        return [body]

    serve_in_thread(PrefixRouter({"/qbo": fake, "/stats": stats}), port=port)
    ready.set()
    while True:
        time.sleep(3600)


def fake_stats(port: int) -> dict:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/stats", timeout=30).json()


# --- Set-up --------------------------------------------------------------------------------------


def bench_env(args) -> dict:
    base = f"http://127.0.0.1:{args.fake_port}/qbo"
    return {
        **os.environ,
        "APP_ENV": "test",  # production refuses the plain-http fake
        "DEBUG": "false",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{args.database}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}",
        "LOG_LEVEL": "WARNING",
        "QBO_CLIENT_ID": CLIENT_ID,
        "QBO_CLIENT_SECRET": CLIENT_SECRET,
        "QBO_API_BASE_URL": f"{base}/v3",
        "QBO_OAUTH_DISCOVERY_URL": f"{base}/.well-known/openid_configuration",
        "QBO_LIMIT_TIME_SCALE": str(args.time_scale),
        "QBO_SYNC_CONCURRENCY": str(args.concurrency),
        **({"QBO_SYNC_CHUNK_SIZE": str(args.chunk)} if args.chunk else {}),
        "QBO_SYNC_BATCH_SIZE": str(args.batch_size),
        "OAUTHLIB_INSECURE_TRANSPORT": "1",
    }


def prepare_database(args, env: dict) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()


def seed(args) -> int:
    """The school, its students and the QuickBooks connection (the ORM, in this process)."""
    from datetime import datetime
    from datetime import timezone as dt_timezone

    from payments.models import ProviderAccount, School, Student
    from quickbooks_sync.models import QboConnection

    school = School.objects.create(code="bench", name="Bench School", currency="UGX")
    ProviderAccount.objects.create(school=school, provider="surepay", webhook_secret="sekret")
    Student.objects.bulk_create(
        [
            Student(school=school, student_number=student_name(i)[0], full_name=student_name(i)[1])
            for i in range(args.students)
        ]
    )
    QboConnection.objects.create(
        school=school, realm_id=REALM, status=QboConnection.Status.CONNECTED, refresh_token=REFRESH_TOKEN,
        item_id="1", item_name="School fees", deposit_account_id="35", deposit_account_name="Checking",
        home_currency="UGX", sync_since=datetime(2000, 1, 1, tzinfo=dt_timezone.utc),
    )  # fmt: skip
    return school.pk


def make_payments(school_id: int, count: int, label: str, rng: random.Random) -> list:
    from django.utils import timezone

    from payments.ledger import FactKind, FactSource
    from payments.models import MappingStatus, Payment, ProviderAccount, Student, TransactionFact

    account = ProviderAccount.objects.get(school_id=school_id)
    students = list(Student.objects.filter(school_id=school_id).order_by("student_number"))
    payments = [
        Payment(
            school_id=school_id,
            account=account,
            provider="surepay",
            external_txn_id=f"{label}-{i}",
            amount_minor=rng.randrange(20, 300) * 1000,
            currency="UGX",
            status="succeeded",
            student=students[i % len(students)],
            mapping_status=MappingStatus.MAPPED,
        )  # fmt: skip
        for i in range(count)
    ]
    Payment.objects.bulk_create(payments)
    # The provider's report that settled each payment: the ledger (and so the books) follow it.
    TransactionFact.objects.bulk_create(
        [
            TransactionFact(
                school_id=school_id, account=account, payment=payment, kind=FactKind.CHARGE, status="succeeded",
                amount_minor=payment.amount_minor, currency="UGX", occurred_at=timezone.now(),
                source=FactSource.PROVIDER_EVENT, txn_id=payment.external_txn_id,
            )  # fmt: skip
            for payment in payments
        ]
    )
    return payments


# --- One phase -----------------------------------------------------------------------------------


def run_phase(name: str, args, school_id: int, rng: random.Random) -> dict:
    from django.db import transaction
    from django.db.models import Sum

    from quickbooks_sync.models import QboPaymentSync, SyncStatus
    from quickbooks_sync.services import qbo_sync_request

    payments = make_payments(school_id, args.payments, name, rng)
    expected_total = sum(p.amount_minor for p in payments)
    before = fake_stats(args.fake_port)
    synced_before = QboPaymentSync.objects.filter(status=SyncStatus.SYNCED).count()
    # What webhook processing does for each payment that settles, here for all of them in one
    # transaction: the workers see the whole backlog at once, and the clock starts at commit.
    setup_started = time.monotonic()
    with transaction.atomic():
        for payment in payments:
            qbo_sync_request(payment_id=payment.pk)
        requested = time.monotonic() - setup_started
        started = time.monotonic()
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        done = QboPaymentSync.objects.filter(status__in=[SyncStatus.SYNCED, SyncStatus.FAILED]).count() - synced_before
        if done >= args.payments:
            break
        time.sleep(0.25)
    wall = time.monotonic() - started
    after = fake_stats(args.fake_port)
    records = QboPaymentSync.objects.filter(payment__external_txn_id__startswith=f"{name}-")
    statuses = dict(Counter(records.values_list("status", flat=True)))
    calls = after["api_calls"] - before["api_calls"]
    by_kind = {kind: after["by_kind"].get(kind, 0) - before["by_kind"].get(kind, 0) for kind in after["by_kind"]}
    documents = {
        entity: after["documents"][entity] - before["documents"][entity]
        for entity in ("Payment", "SalesReceipt", "Customer")
    }
    posted = sum(Decimal(after["total"][e]) - Decimal(before["total"][e]) for e in ("Payment", "SalesReceipt"))
    floor = calls * 60 / LIMIT_PER_MINUTE / args.time_scale
    # Single calls, one per document, can drain no faster than the per-minute limit allows.
    single_call_ceiling = args.payments * 60 / LIMIT_PER_MINUTE / args.time_scale
    return {
        "phase": name,
        "payments": args.payments,
        "statuses": statuses,
        "wall_s": round(wall, 1),
        "records_created_in_s": round(requested, 1),
        "api_calls": calls,
        "calls_per_payment": round(calls / args.payments, 3),
        "by_kind": {k: v for k, v in sorted(by_kind.items()) if v},
        "throttled_429": after["throttled"] - before["throttled"],
        "token_calls": after["token_calls"] - before["token_calls"],
        "floor_s": round(floor, 1),
        "wall_over_floor": round(wall / floor, 2) if floor else None,
        "single_call_ceiling_s": round(single_call_ceiling, 1),
        "faster_than_single_calls": round(single_call_ceiling / wall, 2) if wall else None,
        "documents": documents,
        "posted_total_ugx": str(posted),
        "expected_total_ugx": str(expected_total),
        "exact_total": posted == expected_total,
        "recorded_total_ugx": records.aggregate(total=Sum("amount_minor"))["total"],
        "duplicates_in_books": after["duplicates"],
        "max_per_second": after["max_per_second"],
        "max_per_minute": after["max_per_minute"],
        "max_in_flight": after["max_in_flight"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=2000, help="payments per phase")
    parser.add_argument("--students", type=int, default=400)
    parser.add_argument("--time-scale", type=float, default=2.0)
    parser.add_argument(
        "--latency-ms", type=float, default=250.0, help="QuickBooks answer time, in the fake's (scaled) time"
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="QBO_SYNC_CONCURRENCY")
    parser.add_argument("--chunk", type=int, default=0, help="QBO_SYNC_CHUNK_SIZE (default: the setting's)")
    parser.add_argument("--batch-size", type=int, default=30, help="QBO_SYNC_BATCH_SIZE (1: a call per document)")
    parser.add_argument("--fake-port", type=int, default=8131)
    parser.add_argument("--database", default="school_payments_qbo_bench")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    env = bench_env(args)
    ready = multiprocessing.Event()
    fake = multiprocessing.Process(
        target=_fake_main, args=(args.fake_port, args.students, args.time_scale, args.latency_ms, ready), daemon=True
    )
    fake.start()
    if not ready.wait(60):
        raise RuntimeError("the fake QuickBooks did not start")
    prepare_database(args, env)
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    school_id = seed(args)
    worker = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "config", "worker", "-c", str(args.workers), "--pool", "prefork",
         "--without-heartbeat", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
        cwd=REPO, env=env,
    )  # fmt: skip
    rng = random.Random(11)
    try:
        time.sleep(3)  # let the workers start
        phases = [run_phase(name, args, school_id, rng) for name in ("cold", "steady")]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()  # a lane sleeping out a throttle pause: the figures are taken already
            worker.wait()
        fake.terminate()

    config = (
        f"{args.payments} payments per phase, {args.students} students, limits 500/min 10/s 10 at once, "
        f"time x{args.time_scale:g}, latency {args.latency_ms:g} ms, {args.workers} Celery workers, "
        f"QBO_SYNC_CONCURRENCY={args.concurrency}, QBO_SYNC_BATCH_SIZE={args.batch_size}"
    )
    print(f"\nQuickBooks sync benchmark ({config})")
    print(
        f"{'phase':8}{'synced':>8}{'calls':>7}{'calls/pay':>11}{'429s':>6}{'wall s':>9}{'floor s':>9}{'wall/floor':>12}{'exact':>7}{'dupes':>7}"
    )
    for r in phases:
        print(
            f"{r['phase']:8}{r['statuses'].get('synced', 0):>8}{r['api_calls']:>7}{r['calls_per_payment']:>11}"
            f"{r['throttled_429']:>6}{r['wall_s']:>9}{r['floor_s']:>9}{r['wall_over_floor']:>12}"
            f"{'yes' if r['exact_total'] else 'NO':>7}{r['duplicates_in_books']:>7}"
        )
    for r in phases:
        print(f"{r['phase']}: {r['faster_than_single_calls']}x the single-call ceiling ({r['single_call_ceiling_s']} s); "
              f"calls by kind {r['by_kind']}; token calls {r['token_calls']}; documents {r['documents']}; "
              f"peak {r['max_per_second']}/s, {r['max_per_minute']}/min, {r['max_in_flight']} at once (fake's clock)")  # fmt: skip
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "qbo_bench.json").write_text(json.dumps({"config": config, "phases": phases}, indent=2))
    ok = all(
        r["statuses"] == {"synced": args.payments}
        and r["exact_total"]
        and r["duplicates_in_books"] == 0
        and r["throttled_429"] == 0
        for r in phases
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
