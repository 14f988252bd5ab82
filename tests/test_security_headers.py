"""Production's transport security and the Content-Security-Policy: `check --deploy` is clean;
behind the ingress (X-Forwarded-Proto) plain HTTP is redirected and HTTPS answers carry HSTS;
every page carries a CSP that allows no inline script or style, and no template needs one."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_settings import PRODUCTION, REPO

TEMPLATE_DIRS = [REPO / "templates", REPO / "quickbooks_sync" / "templates"]


def test_check_deploy_is_clean_in_production_settings():
    env = {**PRODUCTION, "SECRET_KEY": "k" * 20 + "production-secret-key-of-fifty-plus-chars-0123456789"}
    from tests.test_settings import load_settings

    result = load_settings("settings.SECURE_HSTS_SECONDS", **env)
    assert result.stdout.strip() == str(365 * 24 * 3600), result.stderr
    import os

    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.endswith("_FILE")}
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env={**clean, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "System check identified no issues (0 silenced)." in check.stdout


@pytest.fixture
def production_transport(settings):
    """The production block of the settings, applied to this test's process."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True


@pytest.mark.django_db
def test_plain_http_is_redirected_and_https_has_hsts(client, production_transport, payment_request_for_headers):
    url = f"/pay/{payment_request_for_headers.token}/"
    plain = client.get(url)
    assert (plain.status_code, plain["Location"]) == (301, f"https://testserver{url}")
    secure = client.get(url, HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    # The kubelet probes a pod over plain HTTP by its address: never redirected.
    assert client.get("/healthz").status_code == 200
    # Providers' webhooks arrive through the ingress, as HTTPS.
    assert client.post("/api/webhooks/surepay/ng", b"{}", content_type="application/json",
                       HTTP_X_FORWARDED_PROTO="https").status_code == 401


@pytest.fixture
def payment_request_for_headers(db):
    from tests.factories import AccountFactory, PaymentRequestFactory, SchoolFactory

    school = SchoolFactory(code="ng", currency="UGX")
    AccountFactory(school=school, provider="dummy", webhook_secret="d")
    return PaymentRequestFactory(school=school)


def policy(response) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in response["Content-Security-Policy"].split("; ")}


@pytest.mark.django_db
def test_pages_and_admin_carry_a_csp_without_inline_script_or_style(client, admin_client, payment_request_for_headers):
    for response in (client.get(f"/pay/{payment_request_for_headers.token}/"), client.get("/pay/unknown/"),
                     admin_client.get("/admin/"), admin_client.get("/admin/payments/payment/")):
        directives = policy(response)
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
    docs = policy(client.get("/api/docs/"))
    assert (docs["script-src"], docs["style-src"]) == ("'self'", "'self' 'unsafe-inline'")
    # Webhook answers are JSON for a provider: no policy to build on the hot path.
    assert "Content-Security-Policy" not in client.post("/api/webhooks/surepay/ng", b"{}", content_type="application/json")


@pytest.mark.parametrize("template", sorted(p for d in TEMPLATE_DIRS for p in d.rglob("*.html")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_template_has_inline_script_style_or_handlers(template: Path):
    html = template.read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert "<style" not in html, "inline <style>"
    assert not re.search(r"\sstyle=", html), "style attribute"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert "javascript:" not in html


@pytest.mark.parametrize("template", sorted(p for d in TEMPLATE_DIRS for p in d.rglob("*.html")), ids=lambda p: str(p.relative_to(REPO)))
def test_template_comments_are_one_line(template: Path):
    # Django's {# #} comments end at the line: a multi-line one is shown to the reader.
    assert not re.search(r"\{#(?:(?!#\}).)*\n", template.read_text()), "multi-line {# #} comment"
