"""The real httpx client against the fake School Directory over a socket."""

import socket

import pytest

from directory_client.client import DirectoryClient, DirectoryError, DirectoryStudent, DirectoryUnavailable
from fakes.directory import FakeDirectory
from fakes.server import json_response, serve_in_thread


@pytest.fixture
def directory():
    fake = FakeDirectory(token="tok")
    server = serve_in_thread(fake)
    fake.base_url = server.base_url
    yield fake
    server.stop()


def client_for(directory, **kwargs):
    options = {"token": "tok", "timeout_seconds": 0.5, "attempts": 3, "backoff_seconds": 0.01, **kwargs}
    return DirectoryClient(base_url=directory.base_url, **options)


def lookup(client, student="prov-001"):
    return client.lookup_student(school_code="ng", provider="surepay", provider_student_id=student)


def test_known_student_is_returned_and_the_request_is_exactly_the_contract(directory):
    assert lookup(client_for(directory)) == DirectoryStudent("STU-0001", "Amina Nakato")
    (request,) = directory.requests
    assert request.method == "GET"
    assert request.path == "/students/lookup"
    assert request.query == {"school": ["ng"], "provider": ["surepay"], "provider_student_id": ["prov-001"]}
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Accept"] == "application/json"


def test_unknown_student_is_none(directory):
    assert lookup(client_for(directory), "prov-999") is None
    assert len(directory.requests) == 1


def test_a_blip_is_retried_with_backoff(directory):
    directory.fail_next(2, status=503)
    assert lookup(client_for(directory)).student_id == "STU-0001"
    assert len(directory.requests) == 3


def test_an_outage_raises_unavailable_after_the_attempts(directory):
    directory.fail_next(5, status=502)
    with pytest.raises(DirectoryUnavailable, match="HTTP 502"):
        lookup(client_for(directory))
    assert len(directory.requests) == 3


def test_429_is_retried(directory):
    directory.fail_next(1, status=429)
    assert lookup(client_for(directory)).student_id == "STU-0001"


def test_a_slow_directory_times_out(directory):
    directory.delay_seconds = 0.5
    with pytest.raises(DirectoryUnavailable, match="timed out"):
        lookup(client_for(directory, timeout_seconds=0.1, attempts=2))
    assert len(directory.requests) == 2


def test_a_closed_port_is_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = DirectoryClient(base_url=f"http://127.0.0.1:{port}", token="tok", attempts=2, backoff_seconds=0.01)
    with pytest.raises(DirectoryUnavailable, match="unreachable"):
        lookup(client)


def test_a_refused_token_is_unavailable_so_fixing_config_recovers(directory):
    with pytest.raises(DirectoryUnavailable, match=r"refused our token \(HTTP 401\)"):
        lookup(client_for(directory, token="wrong"))
    assert len(directory.requests) == 1


def test_other_4xx_is_permanent(directory):
    directory.fail_next(1, status=400)
    with pytest.raises(DirectoryError, match="HTTP 400"):
        lookup(client_for(directory))


def test_an_unexpected_200_body_is_unavailable():
    class Broken(FakeDirectory):
        def handle(self, request):
            return json_response(200, {"name": "no student id"})

    fake = Broken(token="tok")
    server = serve_in_thread(fake)
    try:
        client = DirectoryClient(base_url=server.base_url, token="tok")
        with pytest.raises(DirectoryUnavailable, match="unexpected body"):
            lookup(client)
    finally:
        server.stop()


def test_no_base_url_is_unavailable():
    with pytest.raises(DirectoryUnavailable, match="SCHOOL_API_BASE_URL is not configured"):
        lookup(DirectoryClient(base_url="", token="tok"))


def test_look_ups_share_one_http_client_per_process(directory, monkeypatch):
    """Building an httpx.Client costs more CPU than applying a payment: one per configuration is
    kept, and a forked worker process builds its own."""
    from directory_client import client as module

    built = []
    real = module.httpx.Client
    monkeypatch.setattr(module.httpx, "Client", lambda **kwargs: built.append(kwargs) or real(**kwargs))
    monkeypatch.setattr(module, "_pool", {})
    assert lookup(client_for(directory)) == lookup(client_for(directory)) == DirectoryStudent("STU-0001", "Amina Nakato")
    assert len(built) == 1
    with pytest.raises(DirectoryUnavailable):
        lookup(client_for(directory, token="other"))  # refused (401), through its own client
    assert len(built) == 2
    monkeypatch.setattr(module, "_pool_pid", -1)  # as in a forked child
    lookup(client_for(directory))
    assert len(built) == 3
