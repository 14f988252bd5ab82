"""The webhook endpoint is the only view that skips CSRF protection: every other view (admin,
probes, metrics, the parents' pages) keeps it. Found by walking the whole URL resolver, so a
view added later with @csrf_exempt fails here until it is listed with a reason."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver

from webhooks.views import webhook_receive_view

# view -> why it may skip CSRF. Providers POST server to server: there is no browser session to
# forge, and the signature authenticates the body.
ALLOWED_CSRF_EXEMPT = {webhook_receive_view: "signed server-to-server webhooks"}


def walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def unwrap(view):
    """The function behind a view (class-based views' ``view_class``, decorators' ``__wrapped__``)."""
    return getattr(view, "view_class", None) or view


def test_only_the_webhook_endpoint_is_csrf_exempt():
    routes = list(walk(get_resolver().url_patterns))
    assert len(routes) > 20  # the admin's too: the walk really went through the includes
    exempt = {route: view for route, view in routes if getattr(view, "csrf_exempt", False)}
    assert exempt, "the webhook endpoint should be exempt"
    assert {unwrap(view) for view in exempt.values()} == set(ALLOWED_CSRF_EXEMPT)
    assert sorted(exempt) == [
        "api/webhooks/^(?P<provider>[A-Za-z0-9_-]+)/(?P<school_code>[A-Za-z0-9_-]+)/?$",
        "api/webhooks/^(?P<provider>[A-Za-z0-9_-]+)/?$",
    ]


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
