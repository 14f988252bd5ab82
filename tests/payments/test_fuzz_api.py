"""Schema-driven: schemathesis reads the API's own OpenAPI document (/api/schema/) and generates
requests for every operation, valid and invalid (wrong types, missing fields, huge numbers,
hostile strings), authenticated as a school's staff. None may answer a server error, and every
answer must be one the schema documents or a 4xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: F401 - documented statuses

from payments.api_tokens import api_token_create
from tests.factories import StudentFactory
from tests.fuzzing import count

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]


def _load_schema():
    """The API's OpenAPI document, from the WSGI application in this process (at collection:
    serving it reads no database)."""
    from config.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


schema = _load_schema()


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Requests go through the WSGI application in this process. Like Django's test client, the
    request signals must not close the database connection: it holds the test's transaction."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_token(staff, payment_request, dummy_account, settings):
    settings.RATELIMIT_ENABLE = False
    StudentFactory(school=payment_request.school, student_number="STU-0002")
    return api_token_create(user=staff)


@schema.parametrize()
@hypothesis_settings(max_examples=hypothesis_settings.default.max_examples)
def test_api_operations_never_answer_a_server_error(case, staff_token):
    response = case.call(headers={"Authorization": f"Token {staff_token}"})
    count("api (schemathesis)", response.status_code)
    case.validate_response(response, checks=[not_a_server_error])
