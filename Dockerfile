# syntax=docker/dockerfile:1
# The school-payments image: one image for every role (web, worker, beat, migrations, fakes);
# the command picks the role. No secret is baked in: everything comes from the environment (or
# *_FILE mounts) at run time. See the README's "Deployment" section.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the runtime requirements, and the collected static files ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt ./
# The runtime part of requirements.txt: everything above its "# Tests" section.
RUN sed '/^# Tests/,$d' requirements.txt > requirements-runtime.txt \
    && pip install --requirement requirements-runtime.txt
COPY . .
# Development settings only to collect the admin's static files (no database, no secrets used).
RUN APP_ENV=development python manage.py collectstatic --noinput \
    && python -m compileall -q /app

# --- runtime: slim, non-root ---------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    LOG_FORMAT=json \
    SERVE_STATIC=true \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# Numeric, so Kubernetes' runAsNonRoot can check it. /tmp is the only place it writes (the
# metrics files, beat's schedule): mount an emptyDir there with a read-only root filesystem.
USER 10001:10001
EXPOSE 8000
# Liveness: the process answers (no database or Redis: that is /readyz). Kubernetes uses its own
# probes (k8s/base); this one is for docker and compose.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["gunicorn", "config.wsgi", "--config", "config/gunicorn.conf.py"]
