"""No secret in any log line: the service under gunicorn with the image's config, JSON logs and the
access log switched on, runs the pay flow, a QuickBooks OAuth connect and an M-Pesa callback; the
captured output (gunicorn's access and error logs, Django's request logging, the application's
lines) holds no pay-link token, OAuth code or state, M-Pesa token, session or CSRF cookie."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from django.conf import settings

from fakes.quickbooks import FakeQuickBooks
from fakes.server import serve_in_thread
from payments.models import StaffMembership
from providers.mpesa.adapter import callback_token
from providers.mpesa.wire import mpesa_callback, mpesa_delivery
from providers.wire import Params
from tests.conftest import REPO, free_port, wait_for
from tests.factories import AccountFactory, PaymentFactory, PaymentRequestFactory, SchoolFactory, StudentFactory
from tests.quickbooks_sync.conftest import CLIENT_ID, CLIENT_SECRET, REALM

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery"


@pytest.fixture
def fake_intuit():
    fake = FakeQuickBooks(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    fake.add_company(REALM, name="Nile Gardens Books", home_currency="UGX")
    server = serve_in_thread(fake)
    fake.base_url = server.base_url
    yield fake
    server.stop()


@pytest.fixture
def served(fake_intuit, tmp_path):
    """gunicorn with config/gunicorn.conf.py, its output captured in a file."""
    db = settings.DATABASES["default"]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "APP_ENV": "test",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        "GUNICORN_ACCESSLOG": "-",
        "GUNICORN_WORKERS": "1",
        "PORT": str(port),
        "PUBLIC_BASE_URL": base_url,
        "QBO_CLIENT_ID": CLIENT_ID,
        "QBO_CLIENT_SECRET": CLIENT_SECRET,
        "QBO_API_BASE_URL": f"{fake_intuit.base_url}/v3",
        "QBO_OAUTH_DISCOVERY_URL": f"{fake_intuit.base_url}/.well-known/openid_configuration",
        "QBO_REDIRECT_URI": f"{base_url}/qbo/callback/",
        "OAUTHLIB_INSECURE_TRANSPORT": "1",
        "DUMMY_CHECKOUT_ENABLED": "true",
        "CELERY_TASK_ALWAYS_EAGER": "true",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for(lambda: _up(base_url), timeout=20)
            yield base_url, log_path
        finally:
            process.terminate()
            process.wait(timeout=10)


def _up(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def csrf_of(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def test_pay_flow_oauth_connect_and_mpesa_callback_leave_no_secret_in_the_logs(served):
    base_url, log_path = served
    school = SchoolFactory(code="ng", name="Nile Gardens School", currency="UGX")
    AccountFactory(school=school, provider="dummy", webhook_secret="dummy-secret")
    mpesa = AccountFactory(school=school, provider="mpesa", webhook_secret="mpesa-secret", test_mode=True)
    student = StudentFactory(school=school, student_number="STU-0001")
    payment_request = PaymentRequestFactory(school=school, student=student)
    staff = _staff(school)
    secrets_seen: list[str] = [payment_request.token]

    with httpx.Client(base_url=base_url, follow_redirects=False, timeout=10) as parent:
        # The pay flow: the pay page, "Pay now" with the dummy provider, its page, the thanks page.
        page = parent.get(f"/pay/{payment_request.token}/?utm_source=sms")
        assert page.status_code == 200
        started = parent.post(f"/pay/{payment_request.token}/checkout",
                              data={"provider": "dummy", "csrfmiddlewaretoken": csrf_of(page.text)})
        assert started.status_code == 302
        simulate = parent.get(started.headers["location"])
        paid = parent.post(started.headers["location"],
                           data={"outcome": "succeeded", "amount": "450,000", "csrfmiddlewaretoken": csrf_of(simulate.text)})
        assert paid.status_code == 302
        thanks = parent.get(paid.headers["location"])
        assert "Paid" in thanks.text
        assert parent.get(f"/pay/{payment_request.token}/").status_code == 200  # "Already paid"
        assert parent.get("/pay/not-a-real-token-but-secret-looking/").status_code == 404  # Django logs 404s
        secrets_seen += ["not-a-real-token-but-secret-looking", parent.cookies["csrftoken"]]

    with httpx.Client(base_url=base_url, follow_redirects=False, timeout=10) as browser:
        # A staff member logs in and connects QuickBooks: Intuit sends back a code and a state.
        login = browser.get("/admin/login/")
        assert browser.post("/admin/login/?next=/admin/", data={
            "username": staff.username, "password": PASSWORD, "csrfmiddlewaretoken": csrf_of(login.text)}).status_code == 302
        overview = browser.get("/admin/quickbooks_sync/qboconnection/")
        connect = browser.post("/qbo/ng/connect/", data={"csrfmiddlewaretoken": csrf_of(overview.text)})
        assert connect.status_code == 302
        consent = httpx.get(connect.headers["location"])
        callback = consent.headers["location"]
        code, state = re.search(r"code=([^&]+)", callback).group(1), re.search(r"state=([^&]+)", callback).group(1)
        assert browser.get(callback).status_code == 302
        # A replayed callback is refused (and logged as such).
        assert browser.get(callback).status_code == 400
        secrets_seen += [code, state, browser.cookies["sessionid"]]

    # M-Pesa's callback carries its token in the URL.
    payment = PaymentFactory(account=mpesa, external_txn_id=None, provider_checkout_id="ws_CO_log_test",
                             currency="KES", amount_minor=150_000)
    token = callback_token("mpesa-secret", payment.pk)
    delivery = mpesa_delivery(mpesa_callback(Params(checkout_id="ws_CO_log_test", amount_minor=150_000), 1032), token)
    answer = httpx.post(f"{base_url}/api/webhooks/mpesa/ng", params=delivery.query, content=delivery.body)
    assert answer.status_code == 202
    wrong = httpx.post(f"{base_url}/api/webhooks/mpesa/ng", params={"t": "f" * 64}, content=delivery.body)
    assert wrong.status_code == 401
    secrets_seen += [token, "f" * 64]

    time.sleep(0.5)  # the last lines reach the file
    output = log_path.read_text()
    messages = "\n".join(json.loads(line)["message"] for line in output.splitlines() if line.startswith("{"))
    # The access log is on and says what happened, without the secrets.
    assert '"GET /pay/[token]/" 200' in messages
    assert '"GET /qbo/callback/" 302' in messages
    assert '"POST /api/webhooks/mpesa/ng" 202' in messages
    assert "Not Found: /pay/[token]/" in messages
    for secret in secrets_seen:
        leaks = [line for line in output.splitlines() if secret in line]
        assert not leaks, f"{secret!r} was logged: {leaks[:3]}"
    assert "code=" not in output and "state=" not in output and "?t=" not in output


def _staff(school):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("bursar", password=PASSWORD, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="quickbooks_sync"))
    StaffMembership.objects.create(user=user, school=school)
    return user


def test_runserver_request_lines_are_redacted_too():
    """``make run``'s development server logs each request through ``django.server``."""
    script = (
        "import django, logging; django.setup();"
        "logging.getLogger('django.server').info('\"%s\" %s %s', "
        "'GET /qbo/callback/?code=CODE123&state=STATE456 HTTP/1.1', 302, 0);"
        "logging.getLogger('django.server').info('\"%s\" %s %s', 'GET /pay/PAYTOKEN789/ HTTP/1.1', 200, 10)"
    )
    env = {key: value for key, value in os.environ.items() if key not in {"LOG_FORMAT", "LOG_LEVEL"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", APP_ENV="development", LOG_FORMAT="plain", DEBUG="true")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert '"GET /qbo/callback/?[query] HTTP/1.1" 302 0' in result.stderr
    assert '"GET /pay/[token]/ HTTP/1.1" 200 10' in result.stderr
    for secret in ("CODE123", "STATE456", "PAYTOKEN789"):
        assert secret not in result.stderr
