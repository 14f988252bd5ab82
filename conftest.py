"""pytest's root conftest: the shared fixtures for tests that live beside their code.

Each provider's tests are in its package (``providers/<slug>/tests/``), where ``tests/conftest.py``
does not reach: pytest applies a conftest only to the directory below it. The fixtures every test
may use are defined once, in ``tests/conftest.py``, and imported here so that they apply
everywhere; its hooks (the fuzzing summary) stay there. Not ``pytest_plugins = ["tests.conftest"]``:
pytest then loads the same module a second time as ``tests/``'s conftest and refuses to start.
"""

from tests.conftest import (  # noqa: F401 - fixtures, found by name
    _clean_broker,
    account,
    celery_worker,
    fake_directory,
    gunicorn_server,
    school,
)
