"""Group commit of the request path (``webhooks.inbox``): deliveries arriving together are stored
in one statement, each exactly once, each answered as it would have been alone."""

import threading
import uuid

import httpx
import pytest
from django.db import OperationalError, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from payments.models import OutboxEvent, ProviderAccount, WebhookEvent
from providers.registry import get_provider
from tests.conftest import sign, stored_at_once, surepay_body
from webhooks import inbox, services
from webhooks.selectors import storable_headers


def receive(body: bytes, remote_addr: str = "127.0.0.1") -> services.WebhookReceipt:
    return services.webhook_receive(
        provider_slug="surepay",
        school_code="ng",
        body=body,
        headers={"X-Signature": sign(body)},
        remote_addr=remote_addr,
    )


def receive_at_once(
    bodies: list[bytes], *, gathered: bool = True, addresses: dict | None = None
) -> tuple[list, list[int]]:
    """SurePay deliveries of ``bodies``, each from its own thread (``stored_at_once``)."""
    addresses = addresses or {}
    return stored_at_once(
        [lambda n=n, body=body: receive(body, addresses.get(n, "127.0.0.1")) for n, body in enumerate(bodies)],
        gathered=gathered,
    )


def outbox_of(event: WebhookEvent) -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(event_type="webhook.received", payload__webhook_event_id=event.pk))


@pytest.mark.django_db(transaction=True)
def test_deliveries_waiting_while_one_is_written_are_written_together(account):
    bodies = [surepay_body(event_id=f"evt-{n}", external_txn_id=f"txn-{n}") for n in range(6)]

    receipts, statements = receive_at_once(bodies)

    assert statements == [1, 5]
    assert [(r.created, r.status) for r in receipts] == [(True, "pending")] * 6
    assert WebhookEvent.objects.count() == 6
    for body, receipt in zip(bodies, receipts):
        event = WebhookEvent.objects.get(external_event_id=receipt.event_id)
        # Stored as sent, with its own headers and time, and its one outbox row.
        assert event.raw_body == body.decode()
        assert event.headers == {"X-Signature": sign(body)}
        assert event.status == "pending" and event.processed_at is None and event.result == ""
        assert str(event.remote_addr) == "127.0.0.1"
        [row] = outbox_of(event)
        assert row.key == f"surepay:{account.pk}:{event.external_event_id.replace('evt', 'txn')}"
        assert row.payload["provider_event_id"] == event.external_event_id
        assert row.payload["amount_minor"] == 100_000 and row.payload["currency"] == "UGX"
        assert row.created_at == event.received_at
        assert row.payload["received_at"] == event.received_at.isoformat()


@pytest.mark.django_db(transaction=True)
def test_an_event_delivered_several_times_at_once_is_stored_once(account):
    WebhookEvent.objects.create(account=account, external_event_id="evt-old", raw_body="{}", headers={},
                                received_at=timezone.now(), status="processed")  # fmt: skip
    ids = ["evt-a", "evt-a", "evt-b", "evt-old", "evt-b", "evt-c", "evt-a", "evt-b"]

    receipts, statements = receive_at_once([surepay_body(event_id=event_id) for event_id in ids])

    assert sorted(statements) == [1, 7]
    answers = {
        event_id: sorted((r.created, r.status) for r in receipts if r.event_id == event_id) for event_id in set(ids)
    }
    assert answers == {
        "evt-a": [(False, "pending"), (False, "pending"), (True, "pending")],
        "evt-b": [(False, "pending"), (False, "pending"), (True, "pending")],
        "evt-c": [(True, "pending")],
        "evt-old": [(False, "processed")],
    }
    assert WebhookEvent.objects.count() == 4
    assert OutboxEvent.objects.filter(event_type="webhook.received").count() == 3


@pytest.mark.inbox_falls_back
@pytest.mark.django_db(transaction=True)
def test_when_the_batch_statement_fails_each_delivery_is_stored_alone(account, monkeypatch):
    fallbacks = REGISTRY.get_sample_value("webhook_inbox_fallbacks_total")

    def refuse(rows):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(inbox, "events_insert", refuse)
    bodies = [surepay_body(event_id=f"evt-{n}") for n in range(4)] + [surepay_body(event_id="evt-0")]

    receipts, _ = receive_at_once(bodies, gathered=False)

    assert sorted((r.event_id, r.created) for r in receipts) == [
        ("evt-0", False), ("evt-0", True), ("evt-1", True), ("evt-2", True), ("evt-3", True),
    ]  # fmt: skip
    assert WebhookEvent.objects.count() == 4
    assert OutboxEvent.objects.filter(event_type="webhook.received").count() == 4
    assert REGISTRY.get_sample_value("webhook_inbox_fallbacks_total") > fallbacks


@pytest.mark.inbox_falls_back
@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_refuses_fails_only_its_own_delivery(account):
    bodies = [surepay_body(event_id=f"evt-{n}") for n in range(4)]
    # An address that is not one: PostgreSQL refuses the statement holding it (inet), and again when
    # that delivery is stored alone. Only that delivery fails.
    receipts, statements = receive_at_once(bodies, addresses={3: "no-such-address"})

    assert statements == [1, 3]
    assert [type(r).__name__ for r in receipts[:3]] == ["WebhookReceipt"] * 3
    assert all(r.created for r in receipts[:3])
    assert not isinstance(receipts[3], services.WebhookReceipt)
    assert "no-such-address" in str(receipts[3])
    assert set(WebhookEvent.objects.values_list("external_event_id", flat=True)) == {"evt-0", "evt-1", "evt-2"}
    assert OutboxEvent.objects.filter(event_type="webhook.received").count() == 3


# --- The batch statement against the single one ----------------------------------------------


def row_of(account: ProviderAccount, body: bytes, remote_addr: str | None, *, ignored: bool = False) -> dict:
    adapter = get_provider("surepay")
    headers = {"X-Signature": sign(body), "X-Request-Id": uuid.uuid4().hex}
    event = adapter.verify_and_parse(body=body, headers=headers, account=account, query={})
    # As the request path stores an event with nothing to act on: done at once, with the reason.
    ignored = {"status": "ignored", "result": "not about a payment", "processed_at": timezone.now()} if ignored else {}
    return services._webhook_event_row(
        account=account, event=event, body=body, headers=storable_headers(headers, adapter), remote_addr=remote_addr,
        received_at=timezone.now(), ignored=ignored,
    )  # fmt: skip


def stored() -> dict:
    """Every stored event and outbox row, by the provider's event id."""
    events = {
        event.external_event_id: (
            event.account_id, event.event_type, event.raw_body, event.headers, str(event.remote_addr),
            event.received_at, event.status, event.result, event.processed_at, event.attempts, event.applied_at,
        )
        for event in WebhookEvent.objects.all()
    }  # fmt: skip
    external_ids = dict(WebhookEvent.objects.values_list("pk", "external_event_id"))
    outbox = {}
    for row in OutboxEvent.objects.all():
        payload = dict(row.payload)
        owner = external_ids[payload.pop("webhook_event_id")]
        assert owner not in outbox, "two outbox rows for one event"
        outbox[owner] = (row.event_id, row.event_type, row.version, row.school_id, row.key, payload, row.created_at)
    return {"events": events, "outbox": outbox}


@st.composite
def deliveries(draw):
    """Deliveries of a few events (some sent twice or more, some ignored, from IPv4 or IPv6
    addresses), split into statements of any size, some events stored before."""
    count = draw(st.integers(1, 12))
    bodies = []
    for _ in range(count):
        event_id = draw(st.sampled_from(["e1", "e2", "e3", "e4", "e5"]))
        status = draw(st.sampled_from(["SUCCEEDED", "PENDING", "FAILED", "REVERSED"]))
        bodies.append((surepay_body(event_id=event_id, external_txn_id=f"t-{event_id}", status=status),
                       draw(st.sampled_from(["127.0.0.1", "2001:db8::7", None])), draw(st.booleans())))  # fmt: skip
    sizes, left = [], count
    while left:
        sizes.append(draw(st.integers(1, left)))
        left -= sizes[-1]
    before = draw(st.sets(st.sampled_from(["e1", "e2", "e3"]), max_size=2))
    return bodies, sizes, before


@pytest.mark.django_db
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(case=deliveries())
def test_statements_of_any_size_store_what_one_row_statements_store(account, case):
    bodies, sizes, before = case
    with transaction.atomic():
        for event_id in sorted(before):
            inbox.event_insert(row_of(account, surepay_body(event_id=event_id), "10.0.0.1"))
        rows = [row_of(account, body, address, ignored=ignored) for body, address, ignored in bodies]

        with transaction.atomic():
            alone = [inbox.event_insert(row) is not None for row in rows]
            expected = stored()
            transaction.set_rollback(True)

        together, start = [], 0
        for size in sizes:
            together += [pk is not None for pk in inbox.events_insert(rows[start : start + size])]
            start += size
        assert together == alone
        assert stored() == expected
        transaction.set_rollback(True)


# --- Under gunicorn, with the image's configuration --------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_to_the_image_s_server_are_each_stored_once(account, gunicorn_server):
    base_url = gunicorn_server(image_config=True)
    ids = [f"evt-{n}" for n in range(48)] + [f"evt-{n}" for n in range(0, 48, 4)]  # a quarter sent twice
    results: dict[int, list] = {}
    start = threading.Barrier(16)

    def connection_loop(worker: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            start.wait()
            for index in range(worker, len(ids), 16):
                body = surepay_body(event_id=ids[index], external_txn_id=f"txn-{ids[index]}")
                response = client.post("/api/webhooks/surepay", content=body, headers={
                    "Content-Type": "application/json", "X-School-Code": "ng", "X-Signature": sign(body)})  # fmt: skip
                results[index] = [response.status_code, response.json()]

    threads = [threading.Thread(target=connection_loop, args=(worker,)) for worker in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    answers = {}
    for index, (status, body) in results.items():
        answers.setdefault(ids[index], []).append((status, body["detail"], body["status"]))
    assert len(results) == len(ids)
    for event_id, answered in answers.items():
        expected = [(202, "Webhook accepted", "pending")]
        if int(event_id.split("-")[1]) % 4 == 0:
            expected.append((200, "Duplicate webhook ignored", "pending"))
        assert sorted(answered, reverse=True) == expected, event_id
    assert WebhookEvent.objects.count() == 48
    assert OutboxEvent.objects.filter(event_type="webhook.received").count() == 48
    for event in WebhookEvent.objects.all():
        assert [row.key for row in outbox_of(event)] == [f"surepay:{account.pk}:txn-{event.external_event_id}"]
