"""``make run``: the demo data, the local fake outside services and the development server."""

import os

from django.conf import settings

# staticfiles' runserver serves /static/ in development (the admin's CSS, the API docs page's
# Swagger UI); Django's core runserver does not.
from django.contrib.staticfiles.management.commands.runserver import Command as RunserverCommand

from demo.seed import demo_fakes_connect, demo_seed
from fakes.app import build_fakes
from fakes.server import serve_in_thread


class Command(RunserverCommand):
    help = "Seed the demo data, start the local fakes and serve on http://localhost:8000"

    def inner_run(self, *args, **options):
        # Runs in the serving process (the autoreloader's child), so the fakes restart with it.
        port = int(os.environ.get("FAKES_PORT", "8001"))
        fakes = build_fakes(public_url=f"http://127.0.0.1:{port}")
        serve_in_thread(fakes, port=port)
        if not os.environ.get("PUBLIC_BASE_URL"):
            # Links given to parents and providers point at this server, whatever its port.
            settings.PUBLIC_BASE_URL = f"http://localhost:{self.port}"
        login = demo_seed()
        demo_fakes_connect(fakes=fakes, login=login, public_base_url=settings.PUBLIC_BASE_URL)
        self.stdout.write(
            "\n"
            f"  School Directory stand-in: http://127.0.0.1:{port}/directory (SCHOOL_API_BASE_URL={settings.SCHOOL_API_BASE_URL})\n"
            f"  Django admin: http://localhost:{self.port}/admin/  login: {login.username} / {login.password}"
            f" (superuser; school staff: bursar / the same password)\n"
            f"  A parent's pay link: {settings.PUBLIC_BASE_URL}{login.pay_path} (dummy, Stripe, Flutterwave)\n"
            + "".join(f"  Pay link of school {code}: {settings.PUBLIC_BASE_URL}{path}\n" for code, path in login.regional_pay_paths)
            + f"  (nrb: M-Pesa and Paystack; add: Chapa; bkk: Omise. M-Pesa's phone: http://127.0.0.1:{port}/mpesa/phone)\n"
            f"  REST API (docs: {settings.PUBLIC_BASE_URL}/api/docs/): Authorization: Token {login.api_token}\n"
            f"  Tasks run {'inline (no REDIS_URL)' if settings.CELERY_TASK_ALWAYS_EAGER else 'on Celery workers'}; "
            f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}\n"
        )
        super().inner_run(*args, **options)
