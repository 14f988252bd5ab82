"""Ledger soak (not a test): a few thousand mixed deliveries, out of order and redelivered, while
the worker is killed and Redis is restarted, then three totals per school and currency: what the
providers reported, what the ledger holds, what is in QuickBooks.

The service runs as in production: gunicorn, a Celery worker and beat, PostgreSQL (a fresh
database) and a Redis of its own (so it can be restarted without touching anyone else's). The
providers' APIs and QuickBooks are the project's fakes, served from this process over sockets.

    .venv/bin/python bench/ledger_soak.py [--transactions 1200] [--seed 7] [--concurrency 8]

Exit status 0 when the three totals agree everywhere and ``manage.py reconcile`` finds nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PYTHON = sys.executable
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHOOLS = {"ug": "UGX", "ke": "KES", "ng": "NGN"}
PROVIDERS = {"ug": ("surepay", "stripe"), "ke": ("surepay", "flutterwave"), "ng": ("paystack", "flutterwave")}
SECRETS = {"surepay": "soak-secret", "stripe": "whsec_soak", "paystack": "sk_test_soak", "flutterwave": "flw-soak-hash"}
API_KEYS = {"stripe": "sk_test_soak", "paystack": "sk_test_soak", "flutterwave": "FLWSECK_TEST-soak"}
STUDENT = "prov-soak"


def soak_env(database: str, redis_port: int, fakes_url: str) -> dict:
    return {
        **os.environ,
        # Production settings but for the start-up checks, which refuse the fakes' plain http.
        "APP_ENV": "test",
        "DEBUG": "false",
        "SECRET_KEY": "soak-secret-key-not-for-real-use",
        "FIELD_ENCRYPTION_KEYS": "4Kk2SQCz6kzf6VwEfMSYLRwKrhAPC-O7KXA7Cjc8Ttw=",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SCHOOL_API_BASE_URL": f"{fakes_url}/directory",
        "SCHOOL_API_TOKEN": "unused",
        "METRICS_BEARER_TOKEN": "soak-metrics-token",
        "MEDIA_ROOT": "/tmp/school-payments-soak-media",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "FLUTTERWAVE_API_BASE_URL": f"{fakes_url}/flutterwave",
        "STRIPE_API_BASE_URL": f"{fakes_url}/stripe",
        "PAYSTACK_API_BASE_URL": f"{fakes_url}/paystack",
        "QBO_API_BASE_URL": f"{fakes_url}/qbo/v3",
        "QBO_OAUTH_DISCOVERY_URL": f"{fakes_url}/qbo/.well-known/openid_configuration",
        "QBO_CLIENT_ID": "soak-client",
        "QBO_CLIENT_SECRET": "soak-secret",
        "QBO_REDIRECT_URI": "http://127.0.0.1/qbo/callback/",
        "QBO_ENVIRONMENT": "sandbox",
        "OAUTHLIB_INSECURE_TRANSPORT": "1",
        # Faster safety nets, so a run ends in minutes: the sweep, claims, the janitor, the scan.
        "WEBHOOK_SWEEP_INTERVAL_SECONDS": "5",
        "WEBHOOK_SWEEP_AFTER_SECONDS": "10",
        "WEBHOOK_CLAIM_TIMEOUT_SECONDS": "20",
        "QBO_SCAN_INTERVAL_SECONDS": "10",
        "QBO_SYNC_CLAIM_SECONDS": "20",
        "PAYMENT_RECHECK_INTERVAL_SECONDS": "10",
        "PAYMENT_RECHECK_SCHEDULE_SECONDS": "20,40,80",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }


# --- What the providers do ------------------------------------------------------------------------


@dataclass
class Story:
    """One transaction: the deliveries its provider sends, and the net the school keeps of it."""

    school: str
    provider: str
    deliveries: list = field(default_factory=list)  # (body bytes, headers)
    net_minor: int = 0
    api_state: dict | None = None  # Flutterwave: what its verify API answers


def major(amount_minor: int, currency: str) -> Decimal:
    from core.money import from_minor

    return from_minor(amount_minor, currency)


def surepay_story(rng: random.Random, school: str, number: int) -> Story:
    from providers.wire import hmac_hex

    currency = SCHOOLS[school]
    amount = rng.choice([150_000, 450_000, 1_200_000]) * (100 if currency != "UGX" else 1)
    txn = f"sp-{school}-{number}"
    story = Story(school, "surepay")
    statuses = []
    if rng.random() < 0.3:
        statuses.append(("PENDING", amount))
    succeeded = rng.random() < 0.85
    statuses.append(("SUCCEEDED" if succeeded else "FAILED", amount))
    reversals = [amount // rng.choice([2, 4, 5]) for _ in range(rng.choice([0, 0, 1, 2]))] if succeeded else []
    statuses += [("REVERSED", reversal) for reversal in reversals]
    for index, (status, value) in enumerate(statuses):
        body = json.dumps({
            "event_id": f"{txn}-{index}", "external_txn_id": txn, "amount": f"{major(value, currency):,}",
            "currency": currency, "status": status, "provider_student_id": STUDENT,
        }).encode()  # fmt: skip
        story.deliveries.append((body, {"X-Signature": hmac_hex(SECRETS["surepay"].encode(), body)}))
    story.net_minor = max(0, amount - sum(reversals)) if succeeded else 0
    return story


def stripe_story(rng: random.Random, school: str, number: int) -> Story:
    from providers.stripe.wire import stripe_delivery, stripe_event
    from providers.wire import Params

    currency = SCHOOLS[school]
    amount = rng.choice([200_000, 750_000])
    intent = f"pi_soak_{school}_{number}"
    story = Story(school, "stripe")
    now = int(time.time())
    kinds = []
    if rng.random() < 0.2:
        kinds.append(("payment_intent.payment_failed", 0, 0))
    kinds.append(("payment_intent.succeeded", 0, 1))
    totals = sorted({amount // rng.choice([2, 4]) for _ in range(rng.choice([0, 0, 1, 2]))})
    kinds += [("charge.refunded", total, 10 + step) for step, total in enumerate(totals)]
    for index, (kind, refunded, offset) in enumerate(kinds):
        params = Params(amount_minor=amount, currency=currency, txn_id=intent, refunded_minor=refunded,
                        reference=f"ref-{intent}", student_id=STUDENT, event_id=f"evt_{intent}_{index}")  # fmt: skip
        payload = stripe_event(kind, params)
        payload["created"] = now + offset
        if kind == "charge.refunded":
            payload["data"]["object"]["id"] = f"ch_{intent}"
        delivery = stripe_delivery(payload, [SECRETS["stripe"]])
        story.deliveries.append((delivery.body, delivery.headers))
    story.net_minor = amount - (totals[-1] if totals else 0)
    return story


def paystack_story(rng: random.Random, school: str, number: int) -> Story:
    from providers.paystack.wire import paystack_delivery, paystack_event
    from providers.wire import Params

    currency = SCHOOLS[school]
    amount = rng.choice([2_500_000, 5_000_000])
    reference = f"T{number}_soak_{school}"
    story = Story(school, "paystack")
    events = [("charge.success", amount, "")]
    refunds = [amount // rng.choice([5, 10]) for _ in range(rng.choice([0, 0, 1, 2]))]
    for index, refund in enumerate(refunds):
        if rng.random() < 0.5:
            events.append(("refund.pending", refund, ""))
        events.append(("refund.processed", refund, f"RR{number}-{index}"))
    for kind, value, refund_reference in events:
        payload = paystack_event(kind, Params(amount_minor=value, currency=currency, txn_id=str(500_000 + number),
                                              reference=reference, student_id=STUDENT, event_id=refund_reference))  # fmt: skip
        if kind.startswith("refund."):
            payload["data"]["amount"] = str(value)
        delivery = paystack_delivery(payload, SECRETS["paystack"])
        story.deliveries.append((delivery.body, delivery.headers))
    story.net_minor = amount - sum(refunds)
    return story


def flutterwave_story(rng: random.Random, school: str, number: int) -> Story:
    from providers.flutterwave.wire import flutterwave_delivery, flutterwave_event
    from providers.wire import Params

    currency = SCHOOLS[school]
    amount = rng.choice([1_000_000, 2_500_000])
    txn, tx_ref = 800_000_000 + number, f"tx-soak-{school}-{number}"
    succeeded = rng.random() < 0.85
    refunds = [amount // rng.choice([4, 10]) for _ in range(rng.choice([0, 0, 1]))] if succeeded else []
    story = Story(school, "flutterwave")
    story.api_state = {
        "transaction": {
            "id": txn, "tx_ref": tx_ref, "flw_ref": f"FLW-{number}", "amount": major(amount, currency),
            "currency": currency, "status": "successful" if succeeded else "failed", "processor_response": "ok",
            "customer": {}, "meta": {"student_id": STUDENT},
        },
        "refunds": [
            {"id": txn * 10 + index, "tx_id": txn, "amount_refunded": major(refund, currency), "status": "completed",
             "flw_ref": f"URF-{txn}-{index}"}
            for index, refund in enumerate(refunds)
        ],
    }  # fmt: skip
    params = Params(amount_minor=amount, currency=currency, txn_id=str(txn), reference=tx_ref, student_id=STUDENT)
    payloads = [flutterwave_event("charge.completed" if succeeded else "charge.failed", params)]
    for refund in refunds:
        payloads.append(flutterwave_event("refund", Params(amount_minor=amount, currency=currency, txn_id=str(txn),
                                                           refunded_minor=refund)))  # fmt: skip
    for payload in payloads:
        delivery = flutterwave_delivery(payload, SECRETS["flutterwave"])
        story.deliveries.append((delivery.body, delivery.headers))
    story.net_minor = amount - sum(refunds) if succeeded else 0
    return story


BUILDERS = {"surepay": surepay_story, "stripe": stripe_story, "paystack": paystack_story, "flutterwave": flutterwave_story}


def deliveries_in_the_wild(stories: list[Story], rng: random.Random) -> list:
    """Every delivery, mostly in the provider's order but reordered within a window, and about
    one in eight sent twice."""
    tagged = []
    for position, story in enumerate(stories):
        for index, delivery in enumerate(story.deliveries):
            tagged.append((position * 4 + index + rng.uniform(-6, 6), story, delivery))
            if rng.random() < 0.125:
                tagged.append((position * 4 + index + rng.uniform(0, 40), story, delivery))
    return [(story, delivery) for _, story, delivery in sorted(tagged, key=lambda item: item[0])]


# --- Running the service ----------------------------------------------------------------------------


LOGS = Path("/tmp/ledger-soak")


class Processes:
    """The service's processes; their output goes to /tmp/ledger-soak/<process>.log."""

    def __init__(self, env: dict, port: int, redis_port: int) -> None:
        self.env, self.port, self.redis_port = env, port, redis_port
        self.web = self.worker = self.beat = self.redis = None
        LOGS.mkdir(exist_ok=True)

    @staticmethod
    def log(name: str):
        return open(LOGS / f"{name}.log", "ab")

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.redis_port)

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "config", "worker", "--concurrency", "2", "--loglevel", "WARNING"],
            cwd=REPO, env=self.env, start_new_session=True, stdout=self.log("worker"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def start(self) -> None:
        self.start_redis()
        self.web = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", "2", "--log-level", "warning"],
            cwd=REPO, env=self.env, start_new_session=True, stdout=self.log("web"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.start_worker()
        self.beat = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING", "-s", str(LOGS / "celerybeat-schedule")],
            cwd=REPO, env=self.env, start_new_session=True, stdout=self.log("beat"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port)

    def kill_worker(self) -> None:
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def stop(self) -> None:
        for process in (self.web, self.worker, self.beat):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait()


def wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def setup_database(database: str, env: dict, fake_qbo) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    os.environ.update(env)
    import django

    django.setup()
    from datetime import datetime, timedelta
    from datetime import timezone as dt_timezone

    from django.utils import timezone

    from payments.models import ProviderAccount, ProviderStudentLink, School, Student
    from quickbooks_sync.models import QboConnection

    for number, (code, currency) in enumerate(SCHOOLS.items()):
        school = School.objects.create(code=code, name=f"Soak {code}", currency=currency)
        student = Student.objects.create(school=school, student_number=f"{code.upper()}-1", full_name="Amina Nakato")
        realm = f"77{number}0000000001"
        fake_qbo.add_company(realm, name=f"Soak {code}", home_currency=currency)
        access, refresh = fake_qbo.issue_tokens(realm)
        QboConnection.objects.create(
            school=school, realm_id=realm, company_name=f"Soak {code}", status=QboConnection.Status.CONNECTED,
            access_token=access, access_token_expires_at=timezone.now() + timedelta(hours=1), refresh_token=refresh,
            refresh_token_expires_at=timezone.now() + timedelta(days=100), tokens_refreshed_at=timezone.now(),
            item_id="1", item_name="School fees", deposit_account_id="35", deposit_account_name="Checking",
            home_currency=currency, sync_since=datetime(2000, 1, 1, tzinfo=dt_timezone.utc),
        )  # fmt: skip
        for provider in PROVIDERS[code]:
            ProviderAccount.objects.create(
                school=school, provider=provider, webhook_secret=SECRETS[provider], api_key=API_KEYS.get(provider, ""),
                test_mode=provider != "surepay",
            )  # fmt: skip
            ProviderStudentLink.objects.create(school=school, provider=provider, provider_student_id=STUDENT, student=student)


def processed_events(database: str) -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as conn:
        return conn.execute("SELECT count(*) FROM payments_webhookevent WHERE status = 'processed'").fetchone()[0]


def inject_faults(processes: Processes, database: str, deliveries: int, started: float) -> None:
    """While the worker is busy: kill -9 it a third of the way through the events (restarted 5 s
    later), then stop Redis for 20 s two thirds of the way (everything queued in it is lost; the
    sweep finds what was stored but never processed)."""

    def at(fraction: float) -> None:
        while processed_events(database) < deliveries * fraction * 0.85:
            time.sleep(0.5)

    def say(what: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {what} ({processed_events(database)} events processed)", flush=True)

    at(1 / 3)
    say("kill -9 the worker")
    processes.kill_worker()
    time.sleep(5)
    processes.start_worker()
    say("worker restarted")
    at(2 / 3)
    say("Redis down for 20 s")
    processes.redis.kill()
    processes.redis.wait()
    time.sleep(20)
    processes.start_redis()
    say("Redis back")


def drained(database: str) -> bool:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as conn:
        open_events = conn.execute(
            "SELECT count(*) FROM payments_webhookevent WHERE status IN ('pending', 'processing')"
        ).fetchone()[0]
        open_syncs = sum(
            conn.execute(f"SELECT count(*) FROM {table} WHERE status IN ('pending', 'paused')").fetchone()[0]
            for table in ("quickbooks_sync_qbopaymentsync", "quickbooks_sync_qboadjustmentsync")
        )
    return open_events == 0 and open_syncs == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=8097)
    parser.add_argument("--redis-port", type=int, default=6391)
    parser.add_argument("--database", default="school_payments_soak")
    parser.add_argument("--drain-timeout", type=float, default=900)
    args = parser.parse_args()

    from fakes.quickbooks import FakeQuickBooks
    from fakes.server import PrefixRouter, serve_in_thread
    from providers.flutterwave.fake import FakeFlutterwave

    fake_qbo = FakeQuickBooks(client_id="soak-client", client_secret="soak-secret")
    flutterwave = FakeFlutterwave(secret_key=API_KEYS["flutterwave"])
    fakes = serve_in_thread(PrefixRouter({"/qbo": fake_qbo, "/flutterwave": flutterwave}))
    env = soak_env(args.database, args.redis_port, fakes.base_url)
    setup_database(args.database, env, fake_qbo)

    rng = random.Random(args.seed)
    stories = []
    for number in range(args.transactions):
        school = rng.choice(list(SCHOOLS))
        provider = rng.choice(PROVIDERS[school])
        story = BUILDERS[provider](rng, school, number)
        if story.api_state:
            flutterwave.transactions[story.api_state["transaction"]["tx_ref"]] = story.api_state["transaction"]
            flutterwave.refunds.extend(story.api_state["refunds"])
        stories.append(story)
    deliveries = deliveries_in_the_wild(stories, rng)
    print(f"{len(stories)} transactions, {len(deliveries)} deliveries (logs in {LOGS})", flush=True)

    processes = Processes(env, args.port, args.redis_port)
    processes.start()
    answers: dict[int, int] = defaultdict(int)
    answers_lock = threading.Lock()
    base = f"http://127.0.0.1:{args.port}"
    started = time.monotonic()
    try:
        client = httpx.Client(timeout=30)

        def send(item) -> None:
            story, (body, headers) = item
            url = f"{base}/api/webhooks/{story.provider}/{story.school}"
            for attempt in range(5):  # a provider retries what it could not deliver
                try:
                    status = client.post(url, content=body, headers={**headers, "Content-Type": "application/json"}).status_code
                    break
                except httpx.TransportError:
                    time.sleep(1 + attempt)
            else:
                status = 0
            with answers_lock:
                answers[status] += 1

        faults = threading.Thread(target=inject_faults, args=(processes, args.database, len(deliveries), started), daemon=True)
        faults.start()
        with ThreadPoolExecutor(args.concurrency) as pool:
            for item in deliveries:
                pool.submit(send, item)
        sent_s = time.monotonic() - started
        print(f"[{sent_s:6.1f}s] {len(deliveries)} deliveries sent: {dict(sorted(answers.items()))}", flush=True)
        deadline = time.monotonic() + args.drain_timeout
        while not drained(args.database) and time.monotonic() < deadline:
            time.sleep(3)
        # One more scan of the books after everything settled (the last payments' documents).
        time.sleep(25)
        while not drained(args.database) and time.monotonic() < deadline:
            time.sleep(3)
        print(f"[{time.monotonic() - started:6.1f}s] drained", flush=True)
    finally:
        processes.stop()

    return report(stories, fake_qbo, env)


def report(stories: list[Story], fake_qbo, env: dict) -> int:
    from django.db.models import F, Sum

    from core.money import format_minor, to_minor
    from payments.models import Payment

    sent: dict[tuple, int] = defaultdict(int)
    for story in stories:
        sent[(story.school, SCHOOLS[story.school])] += story.net_minor
    ledger = {
        (row["school__code"], row["currency"]): row["net"]
        for row in Payment.objects.filter(settled_at__isnull=False)
        .values("school__code", "currency")
        .annotate(net=Sum(F("amount_minor") - F("refunded_amount_minor") - F("charged_back_amount_minor")))
    }
    books: dict[tuple, int] = defaultdict(int)
    for number, (code, currency) in enumerate(SCHOOLS.items()):
        realm = f"77{number}0000000001"
        for entity, sign in (("Payment", 1), ("SalesReceipt", 1), ("RefundReceipt", -1)):
            for document in fake_qbo.objects(realm, entity):
                books[(code, currency)] += sign * to_minor(Decimal(str(document["TotalAmt"])), currency)
    agree = True
    print(f"\n{'school':8}{'currency':10}{'sent (providers)':>22}{'ledger':>22}{'QuickBooks':>22}")
    for key in sorted(sent):
        code, currency = key
        row = [sent[key], ledger.get(key, 0), books.get(key, 0)]
        agree &= len(set(row)) == 1
        print(f"{code:8}{currency:10}" + "".join(f"{format_minor(value, currency):>22}" for value in row))
    stuck = Payment.objects.filter(status__in=("pending", "processing")).count()
    result = subprocess.run([PYTHON, "manage.py", "reconcile"], cwd=REPO, env=env, capture_output=True, text=True)
    print(f"\npayments not settled: {stuck}; reconcile exit {result.returncode}: {result.stdout.strip().splitlines()[-1]}")
    return 0 if agree and result.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
