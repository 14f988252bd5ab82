"""The webhook endpoint is the only view a browser with cookies can reach that skips CSRF
protection: every other view (admin, probes, metrics, the parents' pages) keeps it. Found by
walking the whole URL resolver, so a view added later with @csrf_exempt fails here until it is
listed with a reason.

The REST API views are csrf-exempt by DRF's construction; that is safe only because they
authenticate by token alone, so no cookie can authenticate a forged request: checked here too."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authentication import SessionAuthentication
from rest_framework.views import APIView

from payments.views import not_found_view
from webhooks.c2b_views import c2b_view
from webhooks.views import webhook_receive_view

# view -> why it may skip CSRF. Providers POST server to server: there is no browser session to
# forge, and the signature (Daraja's paybill callbacks: the token in the URL) authenticates it.
# The catch-all 404 page changes nothing and reads nothing a forged request could use.
ALLOWED_CSRF_EXEMPT = {
    webhook_receive_view: "signed server-to-server webhooks",
    c2b_view: "Daraja's paybill callbacks, authenticated by the account's token in the URL",
    not_found_view: "the 404 page of unknown addresses: no state, no data",
}


def walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def unwrap(view):
    """The function behind a view (class-based views' ``view_class``, decorators' ``__wrapped__``)."""
    return getattr(view, "view_class", None) or view


def is_token_only_api_view(view) -> bool:
    cls = getattr(view, "cls", None)
    if not (isinstance(cls, type) and issubclass(cls, APIView)):
        return False
    authenticators = cls().get_authenticators()
    return bool(authenticators) and not any(isinstance(a, SessionAuthentication) for a in authenticators)


def test_only_the_webhook_endpoint_is_csrf_exempt():
    routes = list(walk(get_resolver().url_patterns))
    assert len(routes) > 20  # the admin's too: the walk really went through the includes
    exempt = {route: view for route, view in routes if getattr(view, "csrf_exempt", False)}
    api = {route for route, view in exempt.items() if getattr(view, "cls", None) is not None}
    assert api, "the REST API should be found by the walk"
    for route in api:
        assert is_token_only_api_view(exempt[route]), f"{route} is exempt and accepts a session cookie"
    others = {route: view for route, view in exempt.items() if route not in api}
    assert {unwrap(view) for view in others.values()} == set(ALLOWED_CSRF_EXEMPT)
    assert sorted(others) == sorted([
        "^(?!static/|media/).*$",
        "api/webhooks/^(?P<provider>[A-Za-z0-9_-]+)/(?P<school_code>[A-Za-z0-9_-]+)/?$",
        "api/webhooks/^(?P<provider>[A-Za-z0-9_-]+)/?$",
        "api/webhooks/^c2b/(?P<school_code>[A-Za-z0-9_-]+)/(?P<token>[0-9a-f]{64})/(?P<kind>validation|confirmation|result|timeout)/?$",
    ])
    # The parents' forms are among the protected views.
    protected = {route for route, view in routes if not getattr(view, "csrf_exempt", False)}
    assert {
        "pay/<str:token>/checkout",
        "pay/<str:token>/manual",
        "pay/<str:token>/abandon",
        "payments/simulate/<uuid:payment_id>",
        "parents/<slug:school_code>/",
    } <= protected


def test_the_walk_sees_a_newly_exempted_view(settings):
    """The check above can fail: an exempt view in another urlconf is found."""
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def careless(request):  # pragma: no cover - never called
        raise AssertionError

    import types

    urlconf = types.ModuleType("ops_test_urls")
    urlconf.urlpatterns = [*get_resolver().url_patterns, path("careless", careless)]
    exempt = {unwrap(view) for _, view in walk(get_resolver(urlconf).url_patterns) if getattr(view, "csrf_exempt", False)}
    assert careless in exempt and exempt != set(ALLOWED_CSRF_EXEMPT)


def test_probe_and_metrics_views_are_not_exempt():
    from ops.views import healthz_view, metrics_view, readyz_view

    for view in (healthz_view, readyz_view, metrics_view):
        assert not getattr(view, "csrf_exempt", False)
