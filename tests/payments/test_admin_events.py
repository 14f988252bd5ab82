"""Webhook events in Django admin: the detail page (body, headers, verification and processing
result, history), the list, replay by action and by button, and the school scope of all of it."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from payments.models import AuditLog, WebhookEvent
from payments.staff import staff_group_ensure
from tests.conftest import post_webhook, sign, surepay_body
from tests.factories import AccountFactory, PaymentFactory
from tests.payments.conftest import csrf_token, make_staff
from webhooks.admin import pretty_json

pytestmark = pytest.mark.django_db

Status = WebhookEvent.Status
LIST = "/admin/payments/webhookevent/"


def change_url(event) -> str:
    return f"{LIST}{event.pk}/change/"


def replay_url(event) -> str:
    return f"{LIST}{event.pk}/replay/"


def stored_event(account, *, body: dict | str | None = None, **fields) -> WebhookEvent:
    raw_body = json.dumps(body) if isinstance(body, dict) else (body or "")
    fields.setdefault("external_event_id", f"evt-{WebhookEvent.objects.count() + 1}")
    fields.setdefault("status", Status.PROCESSED)
    fields.setdefault("headers", {"Content-Type": "application/json", "X-Signature": "ab12"})
    return WebhookEvent.objects.create(account=account, raw_body=raw_body, **fields)


@pytest.fixture
def bursar(school):
    """Staff of school ng as the staff command makes them: the staff group and a membership."""
    user = make_staff("bursar", school)
    user.groups.add(staff_group_ensure())
    return user


@pytest.fixture
def theirs(other_school):
    """An event of the other school (kla): failed, so replayable by its own staff."""
    return stored_event(other_school.accounts.get(), external_event_id="kla-evt-1", status=Status.FAILED, body={"x": 1})


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- Detail page ----------------------------------------------------------------------------------


def test_the_body_is_pretty_printed_exactly_and_escaped(client, account, bursar):
    raw = '{"event_id":"evt-1","amount":100.50,"note":"<script>alert(1)</script>","raw":{"a":[1,2e3]},"e":{}}'
    event = stored_event(account, body=raw)
    client.force_login(bursar)
    html = client.get(change_url(event)).content.decode()
    pretty = (
        "{\n"
        '  "event_id": "evt-1",\n'
        '  "amount": 100.50,\n'  # as received: not the float 100.5
        '  "note": "<script>alert(1)</script>",\n'
        '  "raw": {\n'
        '    "a": [\n'
        "      1,\n"
        "      2e3\n"
        "    ]\n"
        "  },\n"
        '  "e": {}\n'
        "}"
    )
    assert f"<pre>{escape(pretty)}</pre>" in html
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_pretty_json_keeps_every_token_and_refuses_what_is_not_json():
    assert pretty_json('{"a": 1, "a": 2.10, "b": [], "c": null, "d": "é"}') == (
        '{\n  "a": 1,\n  "a": 2.10,\n  "b": [],\n  "c": null,\n  "d": "é"\n}'
    )
    assert pretty_json('["x", true]') == '[\n  "x",\n  true\n]'
    assert pretty_json("amount=100&status=ok") is None
    assert pretty_json('{"event_id": ') is None
    assert pretty_json("[" * 100_000 + "]" * 100_000) is None  # absurd nesting: shown as text


def test_a_body_that_is_not_json_is_shown_as_text(client, account, bursar):
    event = stored_event(account, body="amount=100&note=<b>hi</b>", external_event_id=None, status=Status.REJECTED)
    client.force_login(bursar)
    html = client.get(change_url(event)).content.decode()
    assert "Not valid JSON; shown as received:<pre>amount=100&amp;note=&lt;b&gt;hi&lt;/b&gt;</pre>" in html


def test_a_purged_body_says_so(client, account, bursar):
    purged_at = timezone.now() - timedelta(days=3)
    event = stored_event(account, body="", headers={}, body_purged_at=purged_at)
    client.force_login(bursar)
    html = client.get(change_url(event)).content.decode()
    purged = f"<em>Purged on {timezone.localtime(purged_at):%Y-%m-%d %H:%M} by the retention policy</em>"
    assert html.count(purged) == 2  # the headers and the body
    assert "Replay this event" not in html


def test_the_verification_and_processing_result_of_a_dead_letter(client, account, bursar):
    body = surepay_body(amount="1,00", status="DONE")
    assert post_webhook(client, body, signature=sign(body)).status_code == 400
    dead = WebhookEvent.objects.get()
    client.force_login(bursar)
    html = client.get(change_url(dead)).content.decode()
    assert "<strong>Passed on receipt</strong>: HMAC-SHA256 of the body (X-Signature)." in html
    assert "<strong>Invalid</strong> (Invalid webhook payload):<ul>" in html
    assert "<li><code>amount</code>: amount &#x27;1,00&#x27; is not a plain positive number</li>" in html
    assert "<li><code>status</code>: Input should be" in html
    assert "Rejected (dead letter)" in html
    assert "ng" in html and "surepay" in html
    # The stored headers, pretty-printed (the signature is no secret; the secret is never sent).
    assert escape(f'"X-Signature": "{sign(body)}"') in html
    assert "Replay this event" in html


def test_the_processing_result_links_the_payment(client, account, bursar):
    payment = PaymentFactory(account=account, external_txn_id="txn-77", amount_minor=100_000, status="succeeded")
    event = stored_event(
        account, body={"a": 1}, payment=payment, result="new -> succeeded; student mapped", attempts=1,
        applied_at=timezone.now(), processed_at=timezone.now(),
    )  # fmt: skip
    client.force_login(bursar)
    html = client.get(change_url(event)).content.decode()
    link = f'<a href="/admin/payments/payment/{payment.pk}/change/"><span class="amount">UGX 100,000</span>, succeeded</a>'
    assert link in html
    assert "new -&gt; succeeded; student mapped" in html
    assert "<strong>Valid</strong>: stored as event <code>evt-1</code>." in html
    assert "Replay this event" not in html  # processed: nothing to replay
    # The list shows the same link.
    assert link in client.get(LIST).content.decode()


def test_a_secret_header_stored_before_it_was_known_is_masked(client, school, bursar):
    flutterwave = AccountFactory(school=school, provider="flutterwave", webhook_secret="flw-secret-hash-1")
    event = stored_event(
        flutterwave, body={"a": 1}, headers={"Verif-Hash": "flw-secret-hash-1", "Content-Type": "application/json"}
    )
    client.force_login(bursar)
    html = client.get(change_url(event)).content.decode()
    assert "flw-secret-hash-1" not in html
    assert escape('"Verif-Hash": "[secret: not shown]"') in html


def test_the_history_lists_the_events_audit_entries(client, account, bursar):
    event = stored_event(account, status=Status.FAILED, body=json.loads(surepay_body()), last_error="boom")
    client.force_login(bursar)
    client.post(replay_url(event))
    html = client.get(change_url(event)).content.decode()
    assert "<td>webhook.replayed</td><td>staff: bursar</td>" in html
    assert escape('"outcome": "requeued"') in html


def test_the_detail_page_cannot_be_saved(client, account, bursar):
    """Read-only even for staff who may replay: a saved form would write every column as loaded,
    over the worker's concurrent changes."""
    event = stored_event(account, body={"a": 1})
    client.force_login(bursar)
    page = client.get(change_url(event))
    assert page.context["title"] == "Webhook event"
    assert page.context["adminform"].form.fields == {}  # Django's view-only page: no field to edit
    assert 'name="_save"' not in page.content.decode()
    assert client.post(change_url(event), {"status": "pending"}).status_code == 403
    assert WebhookEvent.objects.get(pk=event.pk).status == Status.PROCESSED


# --- List -----------------------------------------------------------------------------------------


def test_the_list_shows_columns_filters_and_search(client, account, bursar, other_school):
    payment = PaymentFactory(account=account, external_txn_id="txn-77", reference="PAY-REF-9")
    ours_1 = stored_event(account, external_event_id="ours-1", event_type="payment.succeeded", payment=payment)
    ours_2 = stored_event(account, external_event_id="ours-2", status=Status.FAILED, attempts=9)
    client.force_login(bursar)
    html = client.get(LIST).content.decode()
    # What fits a laptop: the event id and the attempts are on the event's page.
    for header in ("Received", "Provider", "Event type", "Status", "Payment"):
        assert header in html, header
    assert change_url(ours_1) in html and "payment.succeeded" in html and "SurePay" in html
    # Filters: status, provider, the user's own schools only, received date.
    assert "By status" in html and "By provider" in html and "By received at" in html
    assert "?school=" + str(account.school_id) in html
    assert "?school=" + str(other_school.pk) not in html
    failed = client.get(LIST, {"status__exact": "failed"}).content.decode()
    assert change_url(ours_2) in failed and change_url(ours_1) not in failed
    for term in ("ours-1", "txn-77", "PAY-REF-9"):
        found = client.get(LIST, {"q": term}).content.decode()
        assert change_url(ours_1) in found and change_url(ours_2) not in found, term


def test_the_list_makes_the_same_queries_for_one_row_or_many(client, school, account, bursar):
    stored_event(account, payment=PaymentFactory(account=account))
    client.force_login(bursar)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(LIST).status_code == 200
        return len(captured)

    one = queries()
    stripe = AccountFactory(school=school, provider="stripe")
    for index in range(6):
        stored_event(stripe if index % 2 else account, payment=PaymentFactory(account=account))
    stored_event(account, status=Status.REJECTED, external_event_id=None)
    assert WebhookEvent.objects.count() == 8
    assert queries() == one


# --- Replay ---------------------------------------------------------------------------------------


def test_the_replay_button_posts_with_csrf_and_reports_the_outcome(account, bursar):
    event = stored_event(account, status=Status.FAILED, body=json.loads(surepay_body()), attempts=9)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(bursar)
    page = browser.get(change_url(event)).content.decode()
    assert f'<form method="post" action="{replay_url(event)}" class="replay-form">' in page

    assert browser.post(replay_url(event)).status_code == 403  # no CSRF token
    assert WebhookEvent.objects.get(pk=event.pk).status == Status.FAILED
    assert browser.get(replay_url(event)).status_code == 405  # a link never replays

    response = browser.post(replay_url(event), {"csrfmiddlewaretoken": csrf_token(page)}, follow=True)
    assert response.redirect_chain == [(change_url(event), 302)]
    assert messages_of(response) == ["Queued for processing again."]
    event.refresh_from_db()
    assert (event.status, event.attempts) == (Status.PENDING, 0)
    assert AuditLog.objects.get(action="webhook.replayed").actor == "bursar"


def test_the_action_replays_and_counts_each_outcome(client, account, bursar):
    failed = stored_event(account, status=Status.FAILED, body=json.loads(surepay_body()))
    invalid = stored_event(
        account, status=Status.REJECTED, external_event_id=None, body=json.loads(surepay_body(amount="1,00"))
    )
    processed = stored_event(account, body={"a": 1})
    purged = stored_event(account, status=Status.FAILED, body="", body_purged_at=timezone.now())
    client.force_login(bursar)
    changelist = client.get(LIST).content.decode()
    assert '<option value="replay_events">Replay selected dead letters and failed events</option>' in changelist

    response = client.post(
        LIST,
        {"action": "replay_events", "_selected_action": [failed.pk, invalid.pk, processed.pk, purged.pk]},
        follow=True,
    )

    assert messages_of(response) == [
        "1 failed event(s) queued for processing again.",
        "1 dead letter(s) still invalid: each event's page lists the errors.",
        "1 event(s) not replayed: the body was purged by the retention policy.",
        "1 event(s) not replayed: only failed events and dead letters can be replayed.",
    ]
    statuses = dict(WebhookEvent.objects.values_list("pk", "status"))
    assert statuses == {
        failed.pk: Status.PENDING,
        invalid.pk: Status.REJECTED,
        processed.pk: Status.PROCESSED,
        purged.pk: Status.FAILED,
    }
    assert AuditLog.objects.filter(action="webhook.replayed").count() == 2  # refusals change nothing


# --- Another school's events ------------------------------------------------------------------


def test_staff_cannot_list_see_or_replay_another_schools_events(client, account, bursar, theirs):
    ours = stored_event(account, external_event_id="ours-1", status=Status.FAILED, body={"a": 1})
    client.force_login(bursar)

    html = client.get(LIST).content.decode()
    assert "ours-1" in html and "kla-evt-1" not in html
    assert client.get(LIST, {"q": "kla-evt-1"}).context["cl"].result_count == 0
    assert "kla-evt-1" not in client.get(LIST, {"school": str(theirs.account.school_id)}).content.decode()

    # By URL: "not found", as Django admin answers for a missing object (a redirect to the index).
    response = client.get(change_url(theirs))
    assert (response.status_code, response.url) == (302, "/admin/")
    assert client.get(change_url(theirs), follow=True).context["messages"]
    assert client.post(replay_url(theirs)).status_code == 404

    # By action, with the other school's id smuggled in: it is not in the user's queryset.
    response = client.post(LIST, {"action": "replay_events", "_selected_action": [theirs.pk]}, follow=True)
    assert messages_of(response) == ["No events were replayed."]
    client.post(LIST, {"action": "replay_events", "_selected_action": [theirs.pk, ours.pk]})

    theirs.refresh_from_db()
    assert theirs.status == Status.FAILED
    assert WebhookEvent.objects.get(pk=ours.pk).status == Status.PENDING
    assert list(AuditLog.objects.filter(action="webhook.replayed").values_list("target_id", flat=True)) == [
        str(ours.pk)
    ]


def test_a_superuser_sees_every_school(client, account, theirs):
    stored_event(account, external_event_id="ours-1")
    client.force_login(make_staff("root", superuser=True))
    html = client.get(LIST).content.decode()
    assert "ours-1" in html and "kla-evt-1" in html


def test_view_only_staff_cannot_replay(client, school, account):
    viewer = make_staff("auditor", school)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_webhookevent"))
    event = stored_event(account, status=Status.FAILED, body={"a": 1})
    client.force_login(viewer)

    page = client.get(change_url(event))
    assert page.status_code == 200
    assert "Replay this event" not in page.content.decode()
    assert "replay_events" not in client.get(LIST).content.decode()
    assert client.post(replay_url(event)).status_code == 403
    client.post(LIST, {"action": "replay_events", "_selected_action": [event.pk]})

    assert WebhookEvent.objects.get(pk=event.pk).status == Status.FAILED
    assert not AuditLog.objects.filter(action="webhook.replayed").exists()
