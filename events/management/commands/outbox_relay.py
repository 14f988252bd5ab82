"""``manage.py outbox_relay``: the outbox relay as its own process (the Kubernetes Deployment
``relay``). Stops cleanly on SIGTERM after the batch in hand."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from events.relay import relay_run


class Command(BaseCommand):
    help = "Publish outbox events to Kafka and the schools' endpoints, in order, until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Publish what is waiting, then exit.")

    def handle(self, *args, once: bool = False, **options):
        stopping = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.append(True))
        relay = relay_run(stop=lambda: bool(stopping), once=once)
        self.stdout.write(f"published {relay.published} events")
