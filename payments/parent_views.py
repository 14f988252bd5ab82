"""A parent's own history: ask for a link by email or SMS, open it, see every request, payment and
receipt of their children at that school. Thin: the rules are in ``payments.services.parents``
and ``payments.selectors.parent_history``."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from core.client_ip import client_ip
from payments import selectors
from payments.models import ParentAccessLink, School
from payments.ratelimits import rate_limited
from payments.services import parents as parent_services


def _school(school_code: str) -> School:
    school = School.objects.filter(code=school_code.strip().lower()[:32], active=True).first()
    if school is None:
        raise Http404("No such school")
    return school


@never_cache
@require_http_methods(["GET", "POST"])
@rate_limited("parent_link")
def parent_link_request_view(request: HttpRequest, school_code: str) -> HttpResponse:
    school = _school(school_code)
    context = {"school": school, "email": ""}
    if request.method == "GET":
        return render(request, "payments/parent_request.html", context)
    email = request.POST.get("email", "")[:254]
    try:
        parent_services.parent_link_request(school=school, contact=email, remote_addr=client_ip(request.META) or "")
    except parent_services.ParentLinkInvalid as exc:
        return render(request, "payments/parent_request.html", {**context, "email": email, "error": str(exc)}, status=400)
    # The same answer whether or not the address is known: asking reveals nothing.
    return render(request, "payments/parent_sent.html", context)


@never_cache
@require_GET
@rate_limited("pay_page")
def parent_history_view(request: HttpRequest, token: str) -> HttpResponse:
    link = parent_services.parent_link_for_token(token=token)
    if link is None:
        stale = ParentAccessLink.objects.select_related("school").filter(
            token_digest=parent_services.token_digest(token[:100])
        ).first()
        status = 410 if stale is not None else 404
        return render(request, "payments/parent_link_gone.html", {"school": stale.school if stale else None}, status=status)
    history = selectors.parent_history(school=link.school, contact=link.contact)
    response = render(request, "payments/parent_history.html", {"history": history, "link": link})
    response["Referrer-Policy"] = "no-referrer"  # the token is in this page's address
    return response
