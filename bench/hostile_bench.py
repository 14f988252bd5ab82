"""Not a test: what one hostile request costs. Worst-case bodies of the maximum size (256 KiB) are
sent to the webhook endpoint, signed and unsigned, through the whole Django stack in this process
(production settings, PostgreSQL, Redis), and the CPU time and peak memory of each request are
measured: CPU with the thread's own clock, memory with tracemalloc (in separate runs, since tracing
slows everything down). A normal accepted webhook is the reference line.

    .venv/bin/python bench/hostile_bench.py [--repeat 20]     (or: make bench-hostile)

Results are printed and written to bench/results/hostile_bench.json.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "school_payments_hostile_bench"
LIMIT = 256 * 1024
SECRET = "hostile-bench-secret"


def configure() -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    os.environ.update(
        APP_ENV="production",
        DEBUG="false",
        SECRET_KEY="hostile-bench-secret-key-not-for-real-use-0123456789abcdef",
        FIELD_ENCRYPTION_KEYS="4Kk2SQCz6kzf6VwEfMSYLRwKrhAPC-O7KXA7Cjc8Ttw=",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        SCHOOL_API_BASE_URL="http://127.0.0.1:9/unused",
        SCHOOL_API_TOKEN="unused",
        ALLOWED_HOSTS="testserver",
        SECURE_SSL_REDIRECT="false",
        LOG_LEVEL="CRITICAL",
        # Every body below is refused many times over: the refusal limit is not what is measured.
        RATELIMIT_ENABLE="false",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def pad_object(prefix: str, suffix: str, filler: str) -> bytes:
    """``prefix`` + as many ``filler`` as fit + ``suffix``: one body of (nearly) the maximum size."""
    room = LIMIT - len(prefix) - len(suffix)
    return (prefix + filler * (room // len(filler)) + suffix).encode()


def bodies() -> dict[str, bytes]:
    """The worst cases found: each as large as the endpoint accepts."""
    return {
        "deep arrays [[[[... (256 KiB)": b"[" * LIMIT,
        "deep objects {\"a\":{\"a\":...": pad_object("", "", '{"a":')[: LIMIT - 1],
        "31 deep, then filler string": pad_object("[" * 31 + '"', '"' + "]" * 31, "x"),
        "2,499 empty objects (the most values allowed)": ("[" + ",".join(["{}"] * 2_499) + "]").encode(),
        "5,000 values: 161 lists 31 deep": ("[" + ",".join(["[" * 30 + "]" * 30] * 161) + "]").encode(),
        "5,000 numbers, 16 digits each": ("[" + ",".join(["1234567890123456"] * 4_999) + "]").encode(),
        "5,000 fractions, 39 digits each": ("[" + ",".join(["1." + "1" * 37] * 4_999) + "]").encode(),
        "131,072 values (refused by count)": ("[" + ",".join(["0"] * (LIMIT // 2 - 1)) + "]").encode()[:LIMIT - 1] + b"]",
        "one 256 KiB string": pad_object('{"a": "', '"}', "x"),
        "256 KiB of \\u0041 escapes": pad_object('{"a": "', '"}', "\\u0041"),
        "256 KiB of surrogate pairs": pad_object('{"a": "', '"}', "\\ud83d\\ude00"),
        "256 KiB of escaped backslashes": pad_object('{"a": "', '"}', "\\\\"),
        "number 1e1000000": b'{"amount": 1e1000000}',
        "a 256 KiB number": pad_object('{"amount": ', "}", "9"),
        "amount \"1e999999999\" (SurePay)": None,  # filled in below: a valid SurePay body otherwise
        "amount of 200,000 digits (SurePay)": None,
        "\\u0000 at the end of 256 KiB": pad_object('{"a": "', '\\u0000"}', "x"),
        "lone surrogate at the end": pad_object('{"a": "', '\\ud800"}', "x"),
        "invalid UTF-8 at the end": pad_object('{"a": "', '"}', "x")[:-3] + b'\xff"}',
        "4,999 keys with 40-character values": ("{" + ",".join(f'"k{i}": "{"v" * 40}"' for i in range(4_999)) + "}").encode(),
        "truncated JSON": pad_object('{"a": "', "", "x"),
        "deep nesting inside a valid SurePay event": None,
    }


def surepay_event(**overrides) -> bytes:
    payload = {
        "event_id": f"evt-{uuid.uuid4().hex}",
        "external_txn_id": f"txn-{uuid.uuid4().hex}",
        "amount": "100,000",
        "currency": "UGX",
        "status": "SUCCEEDED",
        "provider_student_id": "prov-001",
        **overrides,
    }
    return json.dumps(payload).encode()


def measure(client, name: str, make_request, repeat: int) -> dict:
    cpu_ms: list[float] = []
    status = None
    make_request()  # warm-up: caches, connections, first-time inserts
    for _ in range(repeat):
        started = time.thread_time()
        response = make_request()
        cpu_ms.append((time.thread_time() - started) * 1000)
        status = response.status_code
    tracemalloc.start()
    make_request()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "case": name,
        "status": status,
        "cpu_ms_median": round(statistics.median(cpu_ms), 3),
        "cpu_ms_max": round(max(cpu_ms), 3),
        "peak_mib": round(peak / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    configure()

    from django.test import Client

    from payments.models import Payment, ProviderAccount, School

    school = School.objects.create(code="bench", name="Bench School", currency="UGX")
    ProviderAccount.objects.create(school=school, provider="surepay", webhook_secret=SECRET)
    mpesa = ProviderAccount.objects.create(school=school, provider="mpesa", webhook_secret=SECRET, test_mode=True)
    started = Payment.objects.create(school=school, account=mpesa, provider="mpesa", amount_minor=150_000,
                                     currency="KES", provider_checkout_id="ws_CO_bench")
    from providers.mpesa.adapter import callback_token

    mpesa_token = callback_token(SECRET, started.pk)
    client = Client()

    def signed(body: bytes):
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return lambda: client.post("/api/webhooks/surepay/bench", body, content_type="application/json",
                                   HTTP_X_SIGNATURE=signature)

    def unsigned(body: bytes):
        return lambda: client.post("/api/webhooks/surepay/bench", body, content_type="application/json",
                                   HTTP_X_SIGNATURE="0" * 64)

    cases = bodies()
    cases['amount "1e999999999" (SurePay)'] = surepay_event(amount="1e999999999", raw={"pad": "x" * (LIMIT - 400)})
    cases["amount of 200,000 digits (SurePay)"] = surepay_event(amount="9" * 200_000)
    base = surepay_event(raw={"x": ""})
    cases["deep nesting inside a valid SurePay event"] = base[:-3] + b"[" * (LIMIT - len(base) - 10) + b"]}"
    for name, body in cases.items():
        assert len(body) <= LIMIT, (name, len(body))

    rows = [measure(client, "reference: a normal accepted SurePay webhook (new each time)",
                    lambda: signed(surepay_event())(), args.repeat)]
    for name, body in cases.items():
        rows.append(measure(client, f"signed   {name}", signed(body), args.repeat))
        rows.append(measure(client, f"unsigned {name}", unsigned(body), args.repeat))
    mpesa_deep = b'{"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_bench", "x": ' + b"[" * (LIMIT - 100)
    rows.append(measure(client, "M-Pesa: token of the wrong shape, 256 KiB deep body",
                        lambda: client.post("/api/webhooks/mpesa/bench?t=nope", mpesa_deep, content_type="application/json"),
                        args.repeat))
    rows.append(measure(client, "M-Pesa: a real token, 256 KiB deep body",
                        lambda: client.post(f"/api/webhooks/mpesa/bench?t={mpesa_token}", mpesa_deep[: LIMIT - 200],
                                            content_type="application/json"), args.repeat))
    rows.append(measure(client, "413: a body over the limit (256 KiB + 1)",
                        unsigned(b"x" * (LIMIT + 1)), args.repeat))

    width = max(len(row["case"]) for row in rows)
    print(f"{'case':{width}}  status  cpu ms (median / max)  peak MiB")
    for row in rows:
        print(f"{row['case']:{width}}  {row['status']:>6}  {row['cpu_ms_median']:>8.2f} / {row['cpu_ms_max']:<8.2f}  {row['peak_mib']:>7.2f}")
    worst_cpu = max(rows[1:], key=lambda row: row["cpu_ms_max"])
    worst_memory = max(rows[1:], key=lambda row: row["peak_mib"])
    print(f"\nworst CPU: {worst_cpu['case']} ({worst_cpu['cpu_ms_max']} ms); "
          f"worst memory: {worst_memory['case']} ({worst_memory['peak_mib']} MiB)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile_bench.json").write_text(json.dumps({"repeat": args.repeat, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
