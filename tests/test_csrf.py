"""Only the webhook endpoint is exempt from CSRF protection among the views a browser can reach
with cookies. The REST API views are csrf-exempt by DRF's construction, which is safe only
because they authenticate by token alone: no cookie can authenticate a forged request."""

from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authentication import SessionAuthentication
from rest_framework.views import APIView

from webhooks.views import webhook_receive_view


def all_views(patterns=None, prefix=""):
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from all_views(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def test_the_webhook_endpoint_is_the_only_csrf_exempt_cookie_view():
    exempt = {route: view for route, view in all_views() if getattr(view, "csrf_exempt", False)}
    api_views = {route: view for route, view in exempt.items() if issubclass(getattr(view, "cls", object), APIView)}
    for route, view in api_views.items():
        authenticators = view.cls().get_authenticators()
        assert authenticators, route
        assert not any(isinstance(a, SessionAuthentication) for a in authenticators), route
    others = {view for route, view in exempt.items() if route not in api_views}
    assert others == {webhook_receive_view}
    assert {route for route in exempt if route not in api_views} == {
        "api/webhooks/^(?P<provider>[A-Za-z0-9_-]+)/?$",
        "api/webhooks/^(?P<provider>[A-Za-z0-9_-]+)/(?P<school_code>[A-Za-z0-9_-]+)/?$",
    }
    # The parent pages are among the protected views.
    protected = {route for route, view in all_views() if not getattr(view, "csrf_exempt", False)}
    assert {"pay/<str:token>/checkout", "pay/<str:token>/manual", "pay/<str:token>/abandon", "payments/simulate/<uuid:payment_id>"} <= protected
