"""Webhook ingestion benchmark (not a test).

Starts gunicorn on PostgreSQL (a fresh database) with the production settings and the real
Redis broker, then drives it from a load generator on loopback: distinct, correctly signed
events over N keep-alive connections for D seconds. The same run first measures the floor: a
bare Django view in the same server that only checks one HMAC and inserts one row.

Reports accepted webhooks per second, p50/p99 latency, and checks afterwards that the stored
rows equal the 2xx answers (every request sent before the deadline is answered before the
generator stops, so the counts must match exactly).

    .venv/bin/python bench/webhook_bench.py [--duration 20] [--connections 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SECRET = "sekret"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- Load generator ------------------------------------------------------------------------------


def _read_response(sock: socket.socket, buffer: bytes) -> tuple[int, bool, bytes]:
    """Read one HTTP/1.1 response; return (status, server_closes, leftover bytes)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, closes = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            closes = True
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection mid-body")
        rest += chunk
    return status, closes, rest[length:]


def signed_request(host: str, port: int, path: str, body: bytes) -> bytes:
    """One HTTP/1.1 delivery of ``body`` to the bench school, signed as SurePay signs."""
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"X-School-Code: bench\r\nX-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _connection_loop(host, port, path, label, deadline, results, lock):
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    errors = 0
    sock, buffer, sequence = None, b"", 0
    while time.perf_counter() < deadline:
        sequence += 1
        event_id = f"{label}-{sequence}"
        body = json.dumps(
            {
                "event_id": event_id,
                "external_txn_id": event_id,
                "amount": "100,000",
                "currency": "UGX",
                "status": "SUCCEEDED",
                "provider_student_id": "prov-001",
            }
        ).encode()
        request = signed_request(host, port, path, body)
        started = time.perf_counter()
        try:
            if sock is None:
                sock = socket.create_connection((host, port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer = b""
            sock.sendall(request)
            status, closes, buffer = _read_response(sock, buffer)
        except OSError:
            errors += 1
            if sock is not None:
                sock.close()
            sock = None
            continue
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
        if closes:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    with lock:
        results.append((statuses, latencies, errors))


def _process_main(host, port, path, label, deadline, threads, queue):
    import threading

    results, lock = [], threading.Lock()
    workers = [
        threading.Thread(target=_connection_loop, args=(host, port, path, f"{label}-{i}", deadline, results, lock))
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(results)


def combine(parts: list[dict]) -> dict:
    """One result from several measured phases of the same endpoint."""
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    for part in parts:
        for status, count in part["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
        latencies.extend(part["latencies"])
    latencies.sort()
    elapsed = sum(part["elapsed_s"] for part in parts)
    accepted = sum(part["accepted"] for part in parts)
    return {
        "elapsed_s": round(elapsed, 2),
        "statuses": statuses,
        "errors": sum(part["errors"] for part in parts),
        "accepted": accepted,
        "accepted_per_s": round(accepted / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2) if latencies else None,
    }


def drive(host, port, path, label, duration, connections, processes=2) -> dict:
    deadline_offset = duration
    queue = multiprocessing.Queue()
    started = time.perf_counter()
    deadline = started + deadline_offset
    per_process = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    procs = [
        multiprocessing.Process(target=_process_main, args=(host, port, path, f"{label}-p{i}", deadline, n, queue))
        for i, n in enumerate(per_process)
    ]
    for proc in procs:
        proc.start()
    collected = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    errors = 0
    for results in collected:
        for part_statuses, part_latencies, part_errors in results:
            for status, count in part_statuses.items():
                statuses[status] = statuses.get(status, 0) + count
            latencies.extend(part_latencies)
            errors += part_errors
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    return {"elapsed_s": elapsed, "statuses": statuses, "errors": errors, "accepted": ok, "latencies": latencies}


# --- Server ------------------------------------------------------------------------------------


def bench_env(database: str, redis_db: int) -> dict:
    return {
        **os.environ,
        "APP_ENV": "production",
        "DEBUG": "false",
        "SECRET_KEY": "bench-secret-key-not-for-real-use",
        "FIELD_ENCRYPTION_KEYS": "4Kk2SQCz6kzf6VwEfMSYLRwKrhAPC-O7KXA7Cjc8Ttw=",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "SCHOOL_API_BASE_URL": "http://127.0.0.1:9/unused",
        "SCHOOL_API_TOKEN": "unused",
        "METRICS_BEARER_TOKEN": "bench-metrics-token",
        # No receipts are uploaded here; production wants a bucket or an explicit folder.
        "MEDIA_ROOT": "/tmp/school-payments-bench-media",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "LOG_LEVEL": "WARNING",
        # Plain HTTP on loopback: no ingress in front to terminate TLS.
        "SECURE_SSL_REDIRECT": "false",
    }


def prepare_database(database: str, env: dict) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    manage = [PYTHON, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True)
    subprocess.run([*manage, "create_school", "bench", "Bench School", "--currency", "UGX"], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*manage, "create_provider_account", "bench", "surepay", "--secret", SECRET], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def count_rows(database: str, table: str) -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def cpu_seconds_by_program() -> dict[str, float]:
    """CPU time used so far by the server side of the benchmark, from /proc: the gunicorn
    workers, PostgreSQL and Redis (the load generator is left out)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {"gunicorn": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        if "gunicorn" in cmdline:
            totals["gunicorn"] += used
        elif cmdline.startswith("postgres"):
            totals["postgres"] += used
        elif cmdline.startswith("redis-server"):
            totals["redis"] += used
    return totals




def wait_until_up(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved measuring rounds per endpoint")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--database", default="school_payments_bench")
    parser.add_argument("--redis-db", type=int, default=14)
    args = parser.parse_args()

    env = bench_env(args.database, args.redis_db)
    prepare_database(args.database, env)
    # The image's configuration (config/gunicorn.conf.py), its knobs set by environment.
    env.update(
        GUNICORN_WORKERS=str(args.workers), GUNICORN_WORKER_CLASS=args.worker_class, GUNICORN_THREADS=str(args.threads),
        GUNICORN_LOGLEVEL="warning",
    )  # fmt: skip
    gunicorn = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py", "-b", f"127.0.0.1:{args.port}"],
        cwd=REPO,
        env=env,
    )
    try:
        wait_until_up(args.port)
        # Warm both paths (imports, connections) before measuring.
        drive("127.0.0.1", args.port, "/api/webhooks/bench-floor", "warm-floor", 1, 4)
        drive("127.0.0.1", args.port, "/api/webhooks/surepay", "warm-real", 1, 4)
        warm_floor = count_rows(args.database, "floor_floorevent")
        warm_real = count_rows(args.database, "payments_webhookevent")

        # Interleaved rounds (floor, webhook, floor, webhook, ...), so drift on this shared
        # machine (autovacuum, checkpoints, neighbours' steal) does not fall on one side only.
        phases = {"floor": [], "real": []}
        cpu_used = {"floor": dict.fromkeys(("gunicorn", "postgres", "redis"), 0.0), "real": dict.fromkeys(("gunicorn", "postgres", "redis"), 0.0)}
        for round_number in range(args.rounds):
            for name, path in (("floor", "/api/webhooks/bench-floor"), ("real", "/api/webhooks/surepay")):
                before = cpu_seconds_by_program()
                phases[name].append(
                    drive("127.0.0.1", args.port, path, f"{name}{round_number}", args.duration / args.rounds, args.connections)
                )
                after = cpu_seconds_by_program()
                for program in before:
                    cpu_used[name][program] += after[program] - before[program]
        floor, real = (combine(phases[name]) for name in ("floor", "real"))
        for name, result in (("floor", floor), ("real", real)):
            result["cpu_ms_per_request"] = {
                program: round(seconds * 1000 / max(result["accepted"], 1), 2) for program, seconds in cpu_used[name].items()
            }
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.wait(timeout=30)

    floor["stored"] = count_rows(args.database, "floor_floorevent") - warm_floor
    real["stored"] = count_rows(args.database, "payments_webhookevent") - warm_real
    ratio = real["accepted_per_s"] / floor["accepted_per_s"] if floor["accepted_per_s"] else 0
    config = (
        f"gunicorn -c config/gunicorn.conf.py, -w {args.workers} -k {args.worker_class} --threads {args.threads}, "
        f"{args.connections} connections, "
        f"{args.duration:g} s per endpoint in {args.rounds} interleaved rounds"
    )
    print(f"\nWebhook ingestion benchmark ({config})")
    print(f"{'':24}{'accepted/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'2xx':>9}{'stored':>9}{'other':>8}")
    for name, result in (("floor (HMAC + 1 insert)", floor), ("/api/webhooks/surepay", real)):
        other = {status: count for status, count in result["statuses"].items() if not 200 <= status < 300}
        print(
            f"{name:24}{result['accepted_per_s']:>12}{result['p50_ms']:>10}{result['p99_ms']:>10}"
            f"{result['accepted']:>9}{result['stored']:>9}{str(other or result['errors'] or '-'):>8}"
        )
    print(f"ratio to floor: {ratio:.2f}x, p99 {real['p99_ms'] / floor['p99_ms']:.2f}x the floor's (targets >= 0.90x, <= 1.5x); {os.getloadavg()}")
    for name, result in (("floor", floor), ("webhook", real)):
        print(f"server CPU ms per request, {name}: {result['cpu_ms_per_request']}")
    consistent = floor["stored"] == floor["accepted"] and real["stored"] == real["accepted"]
    print(f"stored rows equal 2xx answers: {'yes' if consistent else 'NO'}")
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "webhook_bench.json").write_text(json.dumps({"config": config, "floor": floor, "real": real, "ratio": ratio}, indent=2))
    if not consistent:
        sys.exit(1)


if __name__ == "__main__":
    main()
