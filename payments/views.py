"""The parent pages: the pay link, "Pay now", manual payments, the thanks page and its JSON
status, and the dummy provider's checkout page. Thin: each view checks its form and calls one
service or selector. Every form carries Django's CSRF token (only the webhook endpoint is exempt).

A paid, cancelled or unknown link is a clear page with a sensible status code, never an error.
"""

from __future__ import annotations

import functools
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve, reverse
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.money import from_minor
from core.phone import mask_phone
from payments import receipts, sandbox, selectors, services
from payments.forms import InstallmentAmountForm, ManualPaymentForm, PayerEmailForm, PhoneForm, SimulateForm
from payments.models import AuditLog, Payment, PaymentRequest
from payments.ratelimits import client_address, rate_limited
from providers.registry import get_provider

# Refusals of what the payer typed (answered 400, not 409: nothing else is in the way).
PAYER_INPUT_REFUSALS = ("phone_invalid", "email_required", "email_invalid", "amount_invalid")

# The parent's choice of language (the switch on every page), kept for a year.
LANGUAGE_COOKIE = "parent_language"
LANGUAGE_CODES = {code for code, _name in settings.LANGUAGES}


def parent_language(view):
    """Draw the page in the parent's language: the one they picked (``?lang=``, then kept in a
    cookie), else the school's default, else English."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        asked = request.GET.get("lang", "")
        language = asked if asked in LANGUAGE_CODES else request.COOKIES.get(LANGUAGE_COOKIE, "")
        if language not in LANGUAGE_CODES:
            language = selectors.parent_page_language(token=kwargs.get("token"), payment_id=kwargs.get("payment_id"))
        with translation.override(language):
            request.LANGUAGE_CODE = language
            response = view(request, *args, **kwargs)
        if asked in LANGUAGE_CODES:
            response.set_cookie(LANGUAGE_COOKIE, asked, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
        response.headers.setdefault("Content-Language", language)
        return response

    return wrapper


def _error_summary(error: str, *forms) -> list[tuple[str, str]]:
    """Every problem on the page, as (message, link to the field): shown at the top, focused."""
    items = [(error, "")] if error else []
    for form in forms:
        if form is None or not form.is_bound:
            continue
        for name, errors in form.errors.items():
            anchor = f"#{form[name].id_for_label}" if name in form.fields else ""
            items.extend((str(message), anchor) for message in errors)
    return items


def _test_banner(accounts) -> list[tuple[str, list[str]]]:
    """(provider name, its test card or phone numbers) for each test-mode way to pay."""
    return [(name, sandbox.test_details(slug)) for slug, name, test_mode in accounts if test_mode]


# Seconds between refreshes of the thanks page without JavaScript (meta refresh), and between
# polls of the status endpoint with it once the first moments have passed.
THANKS_REFRESH_SECONDS = 3
# Right after the parent lands, when the provider's webhook usually arrives, the page asks every
# THANKS_FAST_POLL_MS for THANKS_FAST_POLL_SECONDS, so "Paid" shows within a second of it; a
# page left open then costs a poll every few seconds.
THANKS_FAST_POLL_MS = 500
THANKS_FAST_POLL_SECONDS = 20


def _client_ip(request: HttpRequest) -> str:
    return client_address(request)


def _school_test_banner(school) -> list[tuple[str, list[str]]]:
    return _test_banner((o.slug, o.display_name, o.test_mode) for o in selectors.checkout_options(school=school))


def _closed_page(request: HttpRequest, payment_request: PaymentRequest | None) -> HttpResponse | None:
    """The clear page for a link that cannot be paid, or None when it is open."""
    if payment_request is None:
        return render(request, "payments/pay_unavailable.html", {"reason": "unknown"}, status=404)
    if payment_request.status == PaymentRequest.Status.PAID:
        reason = "paid"
    elif payment_request.status == PaymentRequest.Status.CANCELLED or not payment_request.school.active:
        reason = "cancelled"
    else:
        return None
    context = {"reason": reason, "payment_request": payment_request, "test_banner": _school_test_banner(payment_request.school)}
    return render(request, "payments/pay_unavailable.html", context)


def _asks_email(option, payment_request) -> bool:
    """A provider whose checkout needs the payer's email, and staff gave the request none."""
    return option.needs_email and not payment_request.parent_email


def _render_pay_page(
    request, payment_request, *, status=200, error="", phone_form=None, email_form=None, manual_form=None, amount_form=None
):
    page = selectors.pay_page(payment_request=payment_request)
    in_flight = page.in_flight
    installments = page.installments
    chosen_minor = None
    if installments.allowed and amount_form is None and "amount" in request.GET:
        amount_form = InstallmentAmountForm(
            {"amount": request.GET["amount"]}, payment_request=payment_request, installments=installments
        )
        if amount_form.is_valid():
            chosen_minor = amount_form.cleaned_data["amount"]
        else:
            status = 400  # the amount typed is refused, as a refused POST is
    elif amount_form is not None and amount_form.is_valid():
        chosen_minor = amount_form.cleaned_data["amount"]
    if installments.allowed and amount_form is None:
        amount_form = InstallmentAmountForm(payment_request=payment_request, installments=installments)
    if installments.allowed and chosen_minor is None and installments.smallest_minor == installments.balance_minor:
        chosen_minor = installments.balance_minor  # nothing to choose: only the balance is left

    def bound(form, option):
        return form is not None and form.data.get("provider") == option.slug

    context = {
        "page": page,
        "payment_request": payment_request,
        "error": error,
        # Each way to pay, with the phone form of an on-phone prompt and the email form of a
        # provider that needs one (bound after a bad entry, so the error shows where it was typed).
        "online": [
            (
                option,
                (
                    phone_form
                    if bound(phone_form, option)
                    else PhoneForm(auto_id=f"id_{option.slug}_%s", initial={"phone": payment_request.parent_phone})
                )
                if option.needs_phone
                else None,
                (email_form if bound(email_form, option) else PayerEmailForm(auto_id=f"id_{option.slug}_%s"))
                if _asks_email(option, payment_request)
                else None,
            )
            for option in page.options
        ],
        "manual_form": manual_form or ManualPaymentForm(payment_request=payment_request),
        "installments": installments,
        "amount_form": amount_form,
        # A request paid in parts asks how much first; its "Pay" buttons carry the chosen amount.
        "chosen_minor": chosen_minor,
        "chosen_text": str(from_minor(chosen_minor, payment_request.currency)) if chosen_minor else "",
        "show_pay_buttons": not page.awaiting_review and (not installments.allowed or chosen_minor is not None),
        "errors": _error_summary(error, amount_form if amount_form is not None and amount_form.is_bound else None,
                                 phone_form, email_form, manual_form),
        "test_banner": _test_banner((o.slug, o.display_name, o.test_mode) for o in page.options),
        "lang_path": reverse("pay", args=[payment_request.token]),
        "in_flight": in_flight,
        "in_flight_name": selectors.provider_display_name(in_flight.provider) if in_flight else "",
        "in_flight_phone": mask_phone(in_flight.payer.get("phone", "")) if in_flight and in_flight.payer.get("phone") else "",
        # For phones that cannot take the STK prompt: the school's paybill, from the M-Pesa menu.
        "paybill": selectors.paybill_for_request(payment_request=payment_request),
    }
    return render(request, "payments/pay.html", context, status=status)


@never_cache
@parent_language
@require_GET
@rate_limited("pay_page")
def pay_view(request: HttpRequest, token: str) -> HttpResponse:
    payment_request = selectors.payment_request_for_token(token=token)
    return _closed_page(request, payment_request) or _render_pay_page(request, payment_request)


@never_cache
@parent_language
@require_POST
@rate_limited("pay_checkout")
def pay_checkout_view(request: HttpRequest, token: str) -> HttpResponse:
    """"Pay now": start (or reuse) a checkout and send the parent there."""
    payment_request = selectors.payment_request_for_token(token=token)
    closed = _closed_page(request, payment_request)
    if closed:
        return closed
    provider = request.POST.get("provider", "")
    payer = {}
    phone_form = email_form = None
    option = next((o for o in selectors.checkout_options(school=payment_request.school) if o.slug == provider), None)
    if option is not None and option.needs_phone:
        phone_form = PhoneForm(request.POST, auto_id=f"id_{provider}_%s")
        if not phone_form.is_valid():
            return _render_pay_page(request, payment_request, status=400, phone_form=phone_form)
        payer["phone"] = phone_form.cleaned_data["phone"]
    if option is not None and _asks_email(option, payment_request):
        email_form = PayerEmailForm(request.POST, auto_id=f"id_{provider}_%s")
        if not email_form.is_valid():
            return _render_pay_page(request, payment_request, status=400, email_form=email_form)
        payer["email"] = email_form.cleaned_data["email"]
    amount_minor = None
    installments = selectors.request_installments(payment_request=payment_request)
    if installments.allowed and "amount" in request.POST:
        amount_form = InstallmentAmountForm(request.POST, payment_request=payment_request, installments=installments)
        if not amount_form.is_valid():
            return _render_pay_page(request, payment_request, status=400, amount_form=amount_form)
        amount_minor = amount_form.cleaned_data["amount"]
    try:
        started = services.payment_checkout_start(
            payment_request_id=payment_request.pk,
            provider=provider,
            payer=payer,
            amount_minor=amount_minor,
            actor_type=AuditLog.ActorType.PARENT,
            actor=_client_ip(request),
        )
    except services.CheckoutRefused as exc:
        payment_request.refresh_from_db()
        return _closed_page(request, payment_request) or _render_pay_page(
            request,
            payment_request,
            status=400 if exc.code in PAYER_INPUT_REFUSALS else 409,
            error=exc.detail,
            phone_form=phone_form,
            email_form=email_form,
        )
    except services.CheckoutFailed as exc:
        return _render_pay_page(request, payment_request, status=502, error=exc.detail)
    if started.redirect_url:
        return redirect(started.redirect_url)  # 302 to the provider's page (GET)
    # An on-phone prompt: the thanks page waits for the answer.
    return redirect("payment-thanks", payment_id=started.payment.pk)


@never_cache
@parent_language
@require_POST
@rate_limited("pay_checkout")
def pay_abandon_view(request: HttpRequest, token: str) -> HttpResponse:
    """"Choose another way": give up the checkout under way."""
    payment_request = selectors.payment_request_for_token(token=token)
    closed = _closed_page(request, payment_request)
    if closed:
        return closed
    try:
        payment_id = uuid.UUID(request.POST.get("payment_id", ""))
        services.payment_checkout_abandon(
            payment_id=payment_id,
            payment_request_id=payment_request.pk,
            actor_type=AuditLog.ActorType.PARENT,
            actor=_client_ip(request),
        )
    except (ValueError, Payment.DoesNotExist):
        return _render_pay_page(request, payment_request, status=400, error="That payment is not part of this request.")
    except services.CheckoutRefused as exc:
        return _render_pay_page(request, payment_request, status=409, error=exc.detail)
    return redirect("pay", token=token)


@never_cache
@parent_language
@require_POST
@rate_limited("pay_manual")
def pay_manual_view(request: HttpRequest, token: str) -> HttpResponse:
    """A parent reports a bank transfer, mobile-money or cash payment, with an optional receipt."""
    payment_request = selectors.payment_request_for_token(token=token)
    closed = _closed_page(request, payment_request)
    if closed:
        return closed
    # Refuse an oversized upload before Django reads it (DATA_UPLOAD limits do not cover files).
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > settings.MANUAL_RECEIPT_MAX_BYTES + 64 * 1024:
        form = ManualPaymentForm(payment_request=payment_request)
        return _render_pay_page(
            request,
            payment_request,
            status=413,
            error=f"The receipt is larger than {receipts.size_text(settings.MANUAL_RECEIPT_MAX_BYTES)}.",
            manual_form=form,
        )
    form = ManualPaymentForm(request.POST, request.FILES, payment_request=payment_request)
    if not form.is_valid():
        return _render_pay_page(request, payment_request, status=400, manual_form=form)
    try:
        payment = services.manual_payment_submit(
            payment_request_id=payment_request.pk,
            method=form.cleaned_data["method"],
            manual_reference=form.cleaned_data["reference"],
            amount_minor=form.cleaned_data["amount"],
            receipt=form.cleaned_data["receipt"],
            payer={"ip": _client_ip(request)},
        )
    except services.ManualPaymentInvalid as exc:
        for name, message in exc.errors.items():
            form.add_error(name if name in form.fields else None, message)
        return _render_pay_page(request, payment_request, status=400, manual_form=form)
    except receipts.ReceiptStorageUnavailable as exc:
        # Nothing was recorded: the parent can send the same report again.
        return _render_pay_page(request, payment_request, status=503, error=str(exc), manual_form=form)
    except services.CheckoutRefused as exc:
        payment_request.refresh_from_db()
        return _closed_page(request, payment_request) or _render_pay_page(
            request, payment_request, status=409, error=exc.detail, manual_form=form
        )
    return redirect("payment-thanks", payment_id=payment.pk)


@never_cache
@parent_language
@require_GET
@rate_limited("pay_page")
def payment_thanks_view(request: HttpRequest, payment_id: uuid.UUID) -> HttpResponse:
    """"Processing..." until the provider answers, then "Paid" or "Failed" (with a way to try
    again). Polls the status endpoint with JavaScript; refreshes itself without it."""
    payment = selectors.payment_for_parent(payment_id=payment_id)
    if payment is None:
        return render(request, "payments/pay_unavailable.html", {"reason": "unknown_payment"}, status=404)
    state = selectors.payment_public_state(payment=payment)
    context_name = selectors.provider_display_name(payment.provider) if not payment.is_manual else ""
    context = {
        "payment": payment,
        "payment_request": payment.payment_request,
        "state": state,
        "final": state != "processing",
        "refresh_seconds": THANKS_REFRESH_SECONDS,
        "fast_poll_ms": THANKS_FAST_POLL_MS,
        "fast_poll_seconds": THANKS_FAST_POLL_SECONDS,
        "status_url": reverse("payment-status", args=[payment.pk]),
        "provider_name": selectors.provider_display_name(payment.provider) if not payment.is_manual else "",
        "phone": mask_phone(payment.payer["phone"]) if payment.payer.get("phone") else "",
        # A provider payment: its account's test details; a manual report: the school's.
        "test_banner": (
            _test_banner([(payment.provider, context_name, payment.account.test_mode)])
            if payment.account is not None
            else _school_test_banner(payment.school)
        ),
        "balance_minor": selectors.request_installments(payment_request=payment.payment_request).balance_minor
        if state == "paid" and payment.payment_request is not None and payment.payment_request.status == PaymentRequest.Status.OPEN
        else 0,
        "can_retry": state == "failed"
        and payment.payment_request is not None
        and payment.payment_request.status == PaymentRequest.Status.OPEN,
    }
    return render(request, "payments/thanks.html", context)


@never_cache
@require_GET
@rate_limited("payment_status", json=True)
def payment_status_view(request: HttpRequest, payment_id: uuid.UUID) -> JsonResponse:
    payment = selectors.payment_for_parent(payment_id=payment_id)
    if payment is None:
        return JsonResponse({"detail": "Unknown payment", "code": "not_found"}, status=404)
    return JsonResponse(selectors.payment_public_status(payment=payment))


@never_cache
@parent_language
@require_http_methods(["GET", "POST"])
@rate_limited("pay_checkout")
def payment_simulate_view(request: HttpRequest, payment_id: uuid.UUID) -> HttpResponse:
    """The dummy provider's hosted checkout page. Paying records the outcome as the dummy
    provider's state, posts its signed webhook to this service, then returns to the thanks page."""
    payment = selectors.payment_for_parent(payment_id=payment_id)
    if payment is None or payment.provider != "dummy" or payment.is_manual or not settings.DUMMY_CHECKOUT_ENABLED:
        return render(request, "payments/pay_unavailable.html", {"reason": "unknown_payment"}, status=404)
    form = SimulateForm(request.POST or None, currency=payment.currency, initial={"amount": payment.amount_display.split(" ", 1)[1]})
    recorded = payment.provider_data.get("dummy")
    if request.method == "POST" and form.is_valid():
        payment = services.dummy_payment_simulate(
            payment_id=payment.pk, outcome=form.cleaned_data["outcome"], amount_minor=form.cleaned_data["amount"]
        )
        adapter = get_provider("dummy")
        body, headers = adapter.simulated_webhook(payment=payment, account=payment.account)
        # To this service's own webhook endpoint, on the address the payer's browser used.
        url = request.build_absolute_uri(
            reverse("webhook-receive-school", kwargs={"provider": "dummy", "school_code": payment.school.code})
        )
        adapter.send_webhook(url=url, body=body, headers=headers)
        return redirect("payment-thanks", payment_id=payment.pk)
    return render(
        request,
        "payments/simulate.html",
        {"payment": payment, "form": form, "recorded": recorded, "test_banner": _test_banner([("dummy", "Dummy", True)])},
        status=400 if request.method == "POST" else 200,
    )


# --- Receipts: at an unguessable address, as a page and a PDF ------------------------------------


@never_cache
@require_GET
@rate_limited("pay_page")
def receipt_view(request: HttpRequest, token: str) -> HttpResponse:
    view = selectors.receipt_by_token(token=token)
    if view is None:
        return render(request, "payments/receipt_unknown.html", status=404)
    return render(request, "payments/receipt.html", {"view": view})


@never_cache
@require_GET
@rate_limited("pay_page")
def receipt_pdf_view(request: HttpRequest, token: str) -> HttpResponse:
    from payments.receipt_pdf import receipt_pdf

    view = selectors.receipt_by_token(token=token)
    if view is None:
        return render(request, "payments/receipt_unknown.html", status=404)
    response = HttpResponse(receipt_pdf(view.receipt), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="receipt-{view.number}.pdf"'
    return response


@require_GET
def home_view(request: HttpRequest) -> HttpResponse:
    """``/``: what this service is, for a parent or bursar who lands here (and the admin's
    "View site")."""
    with translation.override(_picked_language(request)):
        response = render(request, "payments/home.html", {"lang_path": reverse("home")})
    patch_vary_headers(response, ["Cookie"])  # the language comes from the parent's cookie
    return response


def _picked_language(request: HttpRequest) -> str:
    asked = request.GET.get("lang") or request.COOKIES.get(LANGUAGE_COOKIE, "")
    return asked if asked in LANGUAGE_CODES else "en"


@csrf_exempt  # it changes nothing: a POST to an unknown address is a 404, not a CSRF refusal
def not_found_view(request: HttpRequest, exception=None) -> HttpResponse:
    """Every unknown address, in any setting (DEBUG included): a plain page, never Django's
    technical one. An address that only lacks its trailing slash is sent to it, as
    APPEND_SLASH would."""
    if not request.path.endswith("/") and request.method in ("GET", "HEAD"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.url_name != "not-found":
            query = request.META.get("QUERY_STRING", "")
            return redirect(request.path + "/" + (f"?{query}" if query else ""), permanent=True)
    with translation.override(_picked_language(request)):
        return render(request, "404.html", status=404)


# For the metrics: an unknown address keeps the "unmatched" route label (ops.middleware).
not_found_view.unmatched_route = True


def server_error_view(request: HttpRequest) -> HttpResponse:
    """The 500 page: static, so it cannot fail in turn."""
    return render(request, "500.html", status=500)
