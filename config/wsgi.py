"""The WSGI application of the image (``gunicorn config.wsgi``).

Providers' webhook deliveries (``/api/webhooks/``) go through a lean middleware stack of their
own, ``settings.WEBHOOK_MIDDLEWARE``: request id, metrics, HTTPS redirect, the NUL guard and the
host check. The rest of the stack (session, CSRF, user, staff time zone, messages, frame and
lock-out checks) serves pages and the staff API; for a signed JSON delivery from a provider it
would only cost CPU on the path that must keep up with a term's first morning.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

full_application = get_wsgi_application()  # sets Django up, with every middleware


def _webhook_application():
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    class WebhookHandler(WSGIHandler):
        def load_middleware(self, is_async=False):
            # Django builds a handler's chain from settings.MIDDLEWARE: it is swapped for the
            # lean list while this handler is built, once, at import, before any request.
            full = settings.MIDDLEWARE
            settings.MIDDLEWARE = settings.WEBHOOK_MIDDLEWARE
            try:
                super().load_middleware(is_async)
            finally:
                settings.MIDDLEWARE = full

    return WebhookHandler()


WEBHOOK_PATH_PREFIX = "/api/webhooks/"
webhook_application = _webhook_application()


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith(WEBHOOK_PATH_PREFIX):
        return webhook_application(environ, start_response)
    return full_application(environ, start_response)
