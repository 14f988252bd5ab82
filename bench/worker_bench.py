"""Worker benchmark (not a test): how fast one Celery worker applies stored webhook events, and
how long a parent waits between the provider's delivery and "Paid".

``drain``   N stored SurePay events (a share of them from students new to us, looked up in a
            School Directory fake over HTTP; the rest known) are published in messages of B ids,
            and one worker (prefork, concurrency 2, as deployed) applies them. Reported in events
            per second, against the floor: a bare task that reads one row and updates one row
            per id, fed the same messages by the same worker, in the same run. Afterwards every
            payment is checked: succeeded, exact amount, mapped, audited.
``latency`` gunicorn (the image's configuration) and the worker; R deliveries per second for D
            seconds, open loop. Delivery -> payment succeeded, p50/p99, from each payment's
            ``settled_at``; the backlog (events stored, not yet processed) sampled every second.
            The floor: the bare view and task, published the same way (batched, after commit).

    .venv/bin/python bench/worker_bench.py drain [--events 5000] [--new-students 0.1] [--batch 100]
    .venv/bin/python bench/worker_bench.py latency [--rate 100] [--duration 300]

Run it on a quiet machine: the figures are ratios against a floor measured in the same run, and
the machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.webhook_bench import (  # noqa: E402
    PYTHON,
    REPO,
    SECRET,
    _read_response,
    bench_env,
    prepare_database,
    signed_request,
    wait_until_up,
)
from fakes.directory import FakeDirectory  # noqa: E402
from fakes.server import serve_in_thread  # noqa: E402

PROCESS_TASK = "webhooks.tasks.webhook_events_process"
FLOOR_TASK = "bench.floor.tasks.floor_events_process"
KNOWN_STUDENTS = 500
AMOUNT_MINOR = 150_000  # UGX has no minor unit: 150,000 shillings


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def dsn(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


def event_body(label: str, sequence: int, student: str) -> bytes:
    return json.dumps(
        {
            "event_id": f"{label}-{sequence}",
            "external_txn_id": f"{label}-txn-{sequence}",
            "amount": f"{AMOUNT_MINOR}",
            "currency": "UGX",
            "status": "SUCCEEDED",
            "provider_student_id": student,
        }
    ).encode()


def student_for(sequence: int, new_share: float) -> str:
    # Every 1/new_share-th event comes from a student the service has not seen yet.
    if new_share and sequence % round(1 / new_share) == 0:
        return f"new-{sequence}"
    return f"known-{sequence % KNOWN_STUDENTS}"


def start_directory(total: int) -> tuple:
    students = {("bench", "surepay", f"known-{n}"): (f"STU-{n:05d}", f"Known Student {n}") for n in range(KNOWN_STUDENTS)}
    students.update({("bench", "surepay", f"new-{n}"): (f"NEW-{n:06d}", f"New Student {n}") for n in range(total + 1)})
    directory = FakeDirectory(token="bench-directory-token", students=students)
    return directory, serve_in_thread(directory)


def seed_known_students(database: str) -> None:
    """The known students: mapped before (a ``ProviderStudentLink`` each), as after a term."""
    with psycopg.connect(dsn(database), autocommit=True) as conn:
        school_id = conn.execute("SELECT id FROM payments_school WHERE code = 'bench'").fetchone()[0]
        now = datetime.now().astimezone()
        for n in range(KNOWN_STUDENTS):
            student_id = conn.execute(
                "INSERT INTO payments_student (school_id, student_number, full_name, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (school_id, f"STU-{n:05d}", f"Known Student {n}", now, now),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO payments_providerstudentlink (school_id, provider, provider_student_id, student_id, source, created_at) "
                "VALUES (%s, 'surepay', %s, %s, 'directory', %s)",
                (school_id, f"known-{n}", student_id, now),
            )


def start_worker(env: dict, log: Path, concurrency: int) -> subprocess.Popen:
    # The worker as deployed (k8s/base/worker-deployment.yaml): prefork.
    return subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "config", "worker", f"--concurrency={concurrency}", "--loglevel=WARNING", "--without-mingle", "--without-gossip"],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def count(database: str, sql: str, params=()) -> int:
    with psycopg.connect(dsn(database)) as conn:
        return conn.execute(sql, params).fetchone()[0]


def wait_for(database: str, sql: str, target: int, timeout: float, params=()) -> float | None:
    """Seconds until ``sql`` counts ``target`` rows, polled every 20 ms; None on timeout."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if count(database, sql, params) >= target:
            return time.perf_counter() - started
        time.sleep(0.02)
    return None


# --- drain --------------------------------------------------------------------------------------


def store_events(env: dict, label: str, total: int, new_share: float) -> list[int]:
    """Store ``total`` signed events through the real ingestion service, in a child process,
    without publishing them; returns their ids in arrival order."""
    code = f"""
import json, os, sys
import django
django.setup()
from webhooks import services
captured = []
services.EVENT_PUBLISHER.add_on_commit = lambda item: captured.append(item[0])
sys.path.insert(0, {str(REPO)!r})
from bench.worker_bench import event_body, student_for
from providers.wire import hmac_hex
for n in range({total}):
    body = event_body({label!r}, n, student_for(n, {new_share}))
    services.webhook_receive(provider_slug="surepay", school_code="bench", body=body,
        headers={{"X-Signature": hmac_hex({SECRET!r}.encode(), body)}}, remote_addr="127.0.0.1")
print(json.dumps(captured))
"""
    out = subprocess.run([PYTHON, "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def store_floor_events(database: str, total: int) -> list[int]:
    with psycopg.connect(dsn(database), autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO floor_floorevent (event_id, body, received_at) "
            "SELECT 'floor-' || n, repeat('x', 200), now() FROM generate_series(1, %s) AS n RETURNING id",
            (total,),
        ).fetchall()
    return [row[0] for row in rows]


def publish_batches(env: dict, task: str, ids: list[int], batch: int) -> None:
    os.environ.update(env)
    from config.celery import app

    with app.producer_or_acquire() as producer:
        for start in range(0, len(ids), batch):
            app.send_task(task, args=([[event_id, None] for event_id in ids[start : start + batch]],), producer=producer)


def drain(args) -> dict:
    env = bench_env(args.database, args.redis_db)
    directory, directory_server = start_directory(args.events + args.warmup)
    env.update({"SCHOOL_API_BASE_URL": directory_server.base_url, "SCHOOL_API_TOKEN": "bench-directory-token"})
    prepare_database(args.database, env)
    seed_known_students(args.database)
    subprocess.run([PYTHON, "-c", f"import redis; redis.Redis.from_url({env['REDIS_URL']!r}).flushdb()"], check=True)
    print(f"storing {args.events + args.warmup} events ({load()})", flush=True)
    warm_ids = store_events(env, "warm", args.warmup, args.new_students)
    event_ids = store_events(env, "evt", args.events, args.new_students)
    floor_warm = store_floor_events(args.database, args.warmup)
    floor_ids = store_floor_events(args.database, args.events)
    os.environ.update(env)
    import django

    django.setup()

    worker = start_worker(env, Path("/tmp/worker_bench_worker.log"), args.concurrency)
    results = {}
    try:
        processed = "SELECT count(*) FROM payments_webhookevent WHERE status = 'processed'"
        floor_done = "SELECT count(*) FROM floor_floorevent WHERE processed_at IS NOT NULL"
        # Warm both tasks (imports, connections, the directory client) before timing.
        publish_batches(env, PROCESS_TASK, warm_ids, args.batch)
        publish_batches(env, FLOOR_TASK, floor_warm, args.batch)
        if wait_for(args.database, processed, args.warmup, 120) is None or wait_for(args.database, floor_done, args.warmup, 60) is None:
            raise SystemExit("the worker did not process the warm-up events (see /tmp/worker_bench_worker.log)")
        for name, task, ids, done_sql in (
            ("floor", FLOOR_TASK, floor_ids, floor_done),
            ("real", PROCESS_TASK, event_ids, processed),
        ):
            load_before = load()
            started = time.perf_counter()
            publish_batches(env, task, ids, args.batch)
            seconds = wait_for(args.database, done_sql, args.warmup + len(ids), args.timeout)
            elapsed = seconds if seconds is not None else time.perf_counter() - started
            results[name] = {
                "events": len(ids),
                "seconds": round(elapsed, 2),
                "per_s": round(len(ids) / elapsed, 1),
                "complete": seconds is not None,
                "load_before": load_before,
                "load_after": load(),
            }
    finally:
        stop(worker)
        directory_server.stop()

    results["check"] = drain_check(args.database, args.events + args.warmup)
    results["directory_lookups"] = len(directory.lookups())
    ratio = results["real"]["per_s"] / results["floor"]["per_s"]
    print(f"\nWorker drain: {args.events} stored events, messages of {args.batch} ids, one worker (prefork, concurrency {args.concurrency})")
    print(f"{'':34}{'events/s':>10}{'seconds':>10}  load before -> after")
    for name, label in (("floor", "floor (read 1 row, update 1 row)"), ("real", "webhook events -> payments")):
        r = results[name]
        print(f"{label:34}{r['per_s']:>10}{r['seconds']:>10}  {r['load_before']} -> {r['load_after']}")
    print(f"ratio to floor: {ratio:.2f}x (target >= 0.50x)")
    print(f"directory look-ups: {results['directory_lookups']} (students new to us: {args.new_students:.0%})")
    print("check: " + ", ".join(f"{key} {value}" for key, value in results["check"].items()))
    results["ratio"] = ratio
    return results


def drain_check(database: str, total: int) -> dict:
    """What a bursar would check: every event became one succeeded payment of the exact amount,
    mapped to its student, with its audit entry."""
    with psycopg.connect(dsn(database)) as conn:
        row = conn.execute(
            """
            SELECT count(*),
                   count(*) FILTER (WHERE p.status = 'succeeded' AND p.amount_minor = %s AND p.currency = 'UGX'),
                   count(*) FILTER (WHERE p.mapping_status = 'mapped' AND p.student_id IS NOT NULL),
                   count(DISTINCT p.id)
            FROM payments_webhookevent e JOIN payments_payment p ON p.id = e.payment_id
            WHERE e.status = 'processed' AND e.applied_at IS NOT NULL
            """,
            (AMOUNT_MINOR,),
        ).fetchone()
        audited = conn.execute(
            "SELECT count(DISTINCT target_id) FROM payments_auditlog WHERE action = 'payment.webhook'"
        ).fetchone()[0]
        mapped_audits = conn.execute("SELECT count(*) FROM payments_auditlog WHERE action = 'payment.mapped'").fetchone()[0]
    processed, exact, mapped, payments = row
    ok = processed == exact == mapped == payments == audited == mapped_audits == total
    return {
        "events processed": processed, "payments": payments, "exact": exact, "mapped": mapped,
        "audited": audited, "mapped audits": mapped_audits, "all right": "yes" if ok else "NO",
    }  # fmt: skip


# --- latency --------------------------------------------------------------------------------------


def paced_sender(port: int, path: str, label: str, rate: float, duration: float, threads: int, sent: dict, lock, new_share: float):
    """Open loop: delivery k leaves at start + k / rate, whoever is free sends it."""
    start = time.time() + 0.5
    total = int(rate * duration)
    next_index = iter(range(total))
    index_lock = threading.Lock()

    def run():
        sock, buffer = None, b""
        while True:
            with index_lock:
                k = next(next_index, None)
            if k is None:
                break
            due = start + k / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            request = signed_request("127.0.0.1", port, path, event_body(label, k, student_for(k, new_share)))
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer = b""
            sent_at = time.time()
            sock.sendall(request)
            status, closes, buffer = _read_response(sock, buffer)
            with lock:
                sent[f"{label}-{k}"] = (sent_at, time.time() - sent_at, status)
            if closes:
                sock.close()
                sock = None

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def latency(args) -> dict:
    env = bench_env(args.database, args.redis_db)
    directory, directory_server = start_directory(int(args.rate * args.duration) + 1000)
    env.update({"SCHOOL_API_BASE_URL": directory_server.base_url, "SCHOOL_API_TOKEN": "bench-directory-token"})
    prepare_database(args.database, env)
    seed_known_students(args.database)
    subprocess.run([PYTHON, "-c", f"import redis; redis.Redis.from_url({env['REDIS_URL']!r}).flushdb()"], check=True)
    gunicorn = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py", "-b", f"127.0.0.1:{args.port}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open("/tmp/worker_bench_gunicorn.log", "w"),
    )  # fmt: skip
    worker = start_worker(env, Path("/tmp/worker_bench_worker.log"), args.concurrency)
    results = {}
    try:
        wait_until_up(args.port)
        for name, path, seconds in (("floor", "/api/webhooks/bench-floor-queued", args.floor_duration), ("real", "/api/webhooks/surepay", args.duration)):
            # A few seconds at the same pace first: imports, connections, the directory client.
            sent: dict = {}
            lock = threading.Lock()
            for thread in paced_sender(args.port, path, f"warm-{name}", args.rate, 3, args.threads, sent, lock, args.new_students):
                thread.join()
            time.sleep(2)
            sent = {}
            load_before = load()
            threads = paced_sender(args.port, path, name, args.rate, seconds, args.threads, sent, lock, args.new_students)
            backlog = []
            while any(thread.is_alive() for thread in threads):
                if name == "real":
                    backlog.append(count(args.database, "SELECT count(*) FROM payments_webhookevent WHERE status IN ('pending', 'processing')"))
                time.sleep(1)
            for thread in threads:
                thread.join()
            load_after = load()
            if name == "floor":
                done_sql = "SELECT count(*) FROM floor_floorevent WHERE processed_at IS NOT NULL AND event_id LIKE 'floor-%%'"
            else:
                done_sql = "SELECT count(*) FROM payments_payment WHERE settled_at IS NOT NULL AND external_txn_id LIKE 'real-txn-%%'"
            wait_for(args.database, done_sql, len(sent), 120)
            results[name] = latency_figures(args.database, name, sent, backlog, load_before, load_after)
    finally:
        stop(worker)
        stop(gunicorn)
        directory_server.stop()
    print(f"\nWorker latency: {args.rate:g} deliveries/s, {args.duration:g} s (floor {args.floor_duration:g} s), gunicorn (config/gunicorn.conf.py) + one worker (concurrency {args.concurrency})")
    print(f"{'':28}{'deliveries':>11}{'202 p99 ms':>12}{'paid p50 ms':>13}{'paid p99 ms':>13}{'max backlog':>13}{'end backlog':>13}")
    for name, label in (("floor", "floor (bare view + task)"), ("real", "surepay -> succeeded")):
        r = results[name]
        print(f"{label:28}{r['deliveries']:>11}{r['answer_p99_ms']:>12}{r['paid_p50_ms']:>13}{r['paid_p99_ms']:>13}{r['max_backlog']:>13}{r['end_backlog']:>13}")
        print(f"{'':28}{r['load_before']} -> {r['load_after']}; not paid within 120 s: {r['missing']}")
    return results


def latency_figures(database: str, name: str, sent: dict, backlog: list, load_before: str, load_after: str) -> dict:
    with psycopg.connect(dsn(database)) as conn:
        if name == "floor":
            rows = conn.execute(
                "SELECT event_id, extract(epoch FROM processed_at) FROM floor_floorevent WHERE event_id LIKE 'floor-%%' AND processed_at IS NOT NULL"
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT e.external_event_id, extract(epoch FROM p.settled_at) FROM payments_webhookevent e "
                "JOIN payments_payment p ON p.id = e.payment_id WHERE e.external_event_id LIKE 'real-%%' AND p.settled_at IS NOT NULL"
            ).fetchall()
    done = {event_id: float(at) for event_id, at in rows}
    paid = [(done[event_id] - sent_at) * 1000 for event_id, (sent_at, _, _) in sent.items() if event_id in done]
    answers = [answer * 1000 for _, answer, _ in sent.values()]
    return {
        "deliveries": len(sent),
        "statuses": sorted({status for _, _, status in sent.values()}),
        "answer_p99_ms": round(percentile(answers, 0.99), 1),
        "paid_p50_ms": round(statistics.median(paid), 1) if paid else None,
        "paid_p99_ms": round(percentile(paid, 0.99), 1) if paid else None,
        "missing": len(sent) - len(paid),
        "max_backlog": max(backlog, default=0),
        "end_backlog": backlog[-1] if backlog else 0,
        "load_before": load_before,
        "load_after": load_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    drain_parser = sub.add_parser("drain")
    drain_parser.add_argument("--events", type=int, default=5000)
    drain_parser.add_argument("--warmup", type=int, default=200)
    drain_parser.add_argument("--batch", type=int, default=100, help="event ids per Celery message")
    drain_parser.add_argument("--timeout", type=float, default=600)
    latency_parser = sub.add_parser("latency")
    latency_parser.add_argument("--rate", type=float, default=100)
    latency_parser.add_argument("--duration", type=float, default=300)
    latency_parser.add_argument("--floor-duration", type=float, default=30)
    latency_parser.add_argument("--threads", type=int, default=8)
    latency_parser.add_argument("--port", type=int, default=8098)
    for each in (drain_parser, latency_parser):
        each.add_argument("--new-students", type=float, default=0.1, help="share of events from students new to us")
        each.add_argument("--database", default="school_payments_worker_bench")
        each.add_argument("--redis-db", type=int, default=13)
        each.add_argument("--concurrency", type=int, default=2, help="the worker's processes (as deployed: 2)")
    args = parser.parse_args()
    print(f"{args.mode} ({load()})", flush=True)
    results = drain(args) if args.mode == "drain" else latency(args)
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"worker_{args.mode}.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
