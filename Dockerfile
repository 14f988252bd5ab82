# syntax=docker/dockerfile:1
# The school-payments image: one image for every role (web, worker, beat, migrations, fakes);
# the command picks the role. No secret is baked in: everything comes from the environment (or
# *_FILE mounts) at run time. See "Deployment" in docs/operations.md.
#
# PYTHON_IMAGE is any Debian bookworm with Python 3.11 as `python3` (with its venv module): the
# official image in CI, or a base made locally where no image registry can be reached
# (`make image`, tools/local_image.py: debootstrap plus Debian's own Python 3.11).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the runtime requirements, and the collected static files ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt ./
# Exactly requirements.txt, which pins every package the service needs (--no-deps: nothing
# unlisted comes in; pip check proves the set is complete), from wheels only, so the image needs
# no compiler. Behind a TLS-inspecting proxy, give pip the proxy's CA bundle as the build secret
# "ca-bundle" (`--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`); without it pip
# uses its own.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip install --no-deps --only-binary=:all: --requirement requirements.txt \
    && pip check
COPY . .
# Development settings only to collect the static files (no database, no secrets used).
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
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    XDG_RUNTIME_DIR=/tmp
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# Where receipts go without object storage (development, compose's volume): the app's user's.
RUN mkdir /app/media && chown 10001:10001 /app/media
# Numeric, so Kubernetes' runAsNonRoot can check it. /tmp is the only place it writes (the
# metrics files, beat's schedule, gunicorn's control socket, found through XDG_RUNTIME_DIR):
# mount an emptyDir there with a read-only root filesystem.
# Uploaded receipts go to object storage (S3) in production, never to the container's disk.
USER 10001:10001
EXPOSE 8000
# Liveness: the process answers (no database or Redis: that is /readyz). Kubernetes uses its own
# probes (k8s/base); this one is for docker and compose.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["gunicorn", "config.wsgi", "--config", "config/gunicorn.conf.py"]
