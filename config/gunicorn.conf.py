"""gunicorn settings of the image: ``gunicorn config.wsgi -c config/gunicorn.conf.py``.

Every value can be changed by an environment variable (GUNICORN_*, PORT). gthread workers, 2 x 8
threads, chosen by measurement (docs/operations.md): a webhook request is short and mostly waits on
PostgreSQL, and the deliveries a process's threads have ready at the same moment are stored with
one statement (webhooks/inbox.py), so more threads mean fewer, fuller statements. Each thread
keeps its own database connection: 16 a pod.

Prometheus multiprocess mode: each worker process writes its metrics to files in
PROMETHEUS_MULTIPROC_DIR; the master empties that directory when it starts and tells
prometheus_client when a worker exits (see ``config/metrics.py``).
"""

import os

from config.gunicorn_logging import ACCESS_LOG_FORMAT

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "30"))
# The workers' heartbeat files: on tmpfs, so a slow disk never gets a worker killed.
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
# Requests are not logged one line each (the ingress does that; the webhook path must stay
# cheap). GUNICORN_ACCESSLOG=- switches a line per request on: method, path without its query and
# with pay-link tokens masked, status, size, duration, request id (config/gunicorn_logging.py).
# gunicorn's own messages are JSON lines like the application's.
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
logger_class = "config.gunicorn_logging.RedactingLogger"
access_log_format = ACCESS_LOG_FORMAT

loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")  # behind the cluster's ingress

if os.environ.get("LOG_FORMAT", "json") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                "datefmt": "%Y-%m-%dT%H:%M:%S%z",
            }
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gunicorn.error": {"level": loglevel.upper(), "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": ["console"]},
    }


def on_starting(server):
    """The master, once: empty the metrics directory of an earlier run."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
        server.log.info("metrics: multiprocess mode, files in %s", directory)


def child_exit(server, worker):
    """The master, when a worker exits: its live gauges no longer count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
