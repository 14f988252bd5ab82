"""Client of the School Directory API, which knows which student a provider's id belongs to.

Contract (also in docs/webhooks.md, "Student mapping")::

    GET {SCHOOL_API_BASE_URL}/students/lookup?school=<code>&provider=<slug>&provider_student_id=<id>
    Authorization: Bearer {SCHOOL_API_TOKEN}

    200 {"student_id": "STU-0001", "full_name": "Amina Nakato"}
    404 the directory does not know that student

Timeouts, connection errors, 429 and 5xx are retried here a few times with a short backoff (a
blip); if the directory is still down, ``DirectoryUnavailable`` tells the Celery task to retry
later with a longer backoff.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass

import httpx
import pydantic
from django.conf import settings

from core.errors import PermanentError, TransientError

logger = logging.getLogger(__name__)


class DirectoryUnavailable(TransientError):
    """The directory could not answer now (down, slow, refusing our token)."""


class DirectoryError(PermanentError):
    """The directory answered in a way retrying cannot change (a 4xx other than 404)."""


@dataclass(frozen=True)
class DirectoryStudent:
    student_id: str
    full_name: str


class _LookupResponse(pydantic.BaseModel):
    student_id: str = pydantic.Field(min_length=1, max_length=64)
    full_name: str = pydantic.Field(default="", max_length=200)


class DirectoryClient:
    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout_seconds: float = 5.0,
        attempts: int = 3,
        backoff_seconds: float = 0.2,
    ):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = httpx.Timeout(timeout_seconds)
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds

    def lookup_student(
        self, *, school_code: str, provider: str, provider_student_id: str
    ) -> DirectoryStudent | None:
        """The school's student behind a provider's student id, or None if unknown."""
        if not self.base_url:
            raise DirectoryUnavailable("SCHOOL_API_BASE_URL is not configured")
        params = {"school": school_code, "provider": provider, "provider_student_id": provider_student_id}
        last_problem = ""
        client = pooled_client(self.base_url, self.token, self.timeout)
        for attempt in range(self.attempts):
            if attempt:
                # Exponential backoff with jitter so many workers do not retry in step.
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
            try:
                response = client.get("/students/lookup", params=params)
            except httpx.TimeoutException:
                last_problem = "timed out"
                continue
            except httpx.TransportError as exc:
                last_problem = f"unreachable ({type(exc).__name__})"
                continue
            if response.status_code == 404:
                return None
            if response.status_code == 200:
                return self._student(response)
            if response.status_code in (401, 403):
                # A wrong token is fixed by configuration, after which retries succeed.
                raise DirectoryUnavailable(f"School Directory refused our token (HTTP {response.status_code})")
            if response.status_code == 429 or response.status_code >= 500:
                last_problem = f"HTTP {response.status_code}"
                continue
            raise DirectoryError(f"School Directory answered HTTP {response.status_code}")
        logger.warning("School Directory unavailable after %d attempts: %s", self.attempts, last_problem)
        raise DirectoryUnavailable(f"School Directory unavailable: {last_problem}")

    @staticmethod
    def _student(response: httpx.Response) -> DirectoryStudent:
        try:
            body = _LookupResponse.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            raise DirectoryUnavailable("School Directory answered 200 with an unexpected body") from exc
        return DirectoryStudent(student_id=body.student_id, full_name=body.full_name)


_pool: dict[tuple, httpx.Client] = {}
_pool_pid = os.getpid()
_pool_lock = threading.Lock()


def pooled_client(base_url: str, token: str, timeout: httpx.Timeout) -> httpx.Client:
    """One ``httpx.Client`` per process and configuration, kept: building one costs about as much
    CPU as applying a payment, and its pool keeps the connection to the directory open between
    look-ups. Thread-safe; a forked worker process starts its own (sockets are not shared)."""
    global _pool_pid
    key = (base_url, token, timeout.connect, timeout.read, timeout.write, timeout.pool)
    with _pool_lock:
        if _pool_pid != os.getpid():
            _pool.clear()
            _pool_pid = os.getpid()
        client = _pool.get(key)
        if client is None:
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            client = _pool[key] = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
        return client


def default_directory_client(*, attempts: int | None = None) -> DirectoryClient:
    """The configured School Directory; ``attempts`` overrides ``SCHOOL_API_ATTEMPTS``."""
    return DirectoryClient(
        base_url=settings.SCHOOL_API_BASE_URL,
        token=settings.SCHOOL_API_TOKEN,
        timeout_seconds=settings.SCHOOL_API_TIMEOUT_SECONDS,
        attempts=settings.SCHOOL_API_ATTEMPTS if attempts is None else attempts,
    )
