"""tools/argocd_sync.py, the deploy workflow's "sync and wait", against a local server speaking
Argo CD's REST API (/api/v1/applications): bearer tokens, project-role permissions (an app the
token may not see is "permission denied"), refresh from git, one sync operation at a time, and an
Application status that moves through the operation's phases and the resources' health."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tools import argocd_sync

TOKEN = "ci-role-token"
NEW_COMMIT = "4f1c2b3a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a"
OLD_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeApplication:
    name: str
    synced_revision: str = OLD_COMMIT
    head_revision: str = OLD_COMMIT  # what the branch points at, as Argo CD last fetched it
    git_revision: str = NEW_COMMIT  # what the branch points at in git
    phase: str = "Succeeded"
    message: str = ""
    health: str = "Healthy"
    # How the next sync goes: polls while Running, its end phase, health polls, end health.
    running_polls: int = 2
    end_phase: str = "Succeeded"
    progressing_polls: int = 2
    end_health: str = "Healthy"
    countdown: list[int] = field(default_factory=lambda: [0, 0])

    def start_sync(self) -> None:
        self.phase, self.message = "Running", "waiting for completion of hook batch/Job/school-payments-migrate"
        self.countdown = [self.running_polls, self.progressing_polls]

    def advance(self) -> None:
        if self.phase == "Running":
            if self.countdown[0] > 0:
                self.countdown[0] -= 1
                return
            self.phase = self.end_phase
            self.message = "successfully synced (all tasks run)" if self.end_phase == "Succeeded" else "one or more objects failed to apply"
            self.synced_revision = self.head_revision
            self.health = "Progressing"
        elif self.health == "Progressing":
            if self.countdown[1] > 0:
                self.countdown[1] -= 1
                return
            self.health = self.end_health

    def as_json(self) -> dict:
        in_sync = self.synced_revision == self.head_revision and self.phase == "Succeeded"
        return {
            "metadata": {"name": self.name, "namespace": "argocd"},
            "spec": {"project": "school-payments"},
            "status": {
                "sync": {"status": "Synced" if in_sync else "OutOfSync", "revision": self.synced_revision},
                "health": {"status": self.health},
                "operationState": {"phase": self.phase, "message": self.message, "syncResult": {"revision": self.synced_revision}},
            },
        }


class FakeArgoCD:
    def __init__(self, *apps: FakeApplication, allowed: set[str] | None = None) -> None:
        self.apps = {app.name: app for app in apps}
        self.allowed = allowed if allowed is not None else set(self.apps)
        self.requests: list[tuple[str, str, dict | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((method, self.path, body))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"error": "no session information", "code": 16, "message": "no session information"})
                parts = urlsplit(self.path)
                segments = parts.path.strip("/").split("/")
                if segments[:3] != ["api", "v1", "applications"] or len(segments) < 4:
                    return self._answer(404, {"code": 5, "message": "Not Found"})
                name = segments[3]
                app = fake.apps.get(name)
                # Argo CD answers "permission denied" for an app the token may not see, whether or not it exists.
                if app is None or name not in fake.allowed:
                    return self._answer(403, {"code": 7, "message": "permission denied"})
                if method == "GET" and len(segments) == 4:
                    if parts.query == "refresh=normal":
                        app.head_revision = app.git_revision
                    else:
                        app.advance()
                    return self._answer(200, app.as_json())
                if method == "POST" and segments[4:] == ["sync"]:
                    if app.phase in {"Running", "Terminating"}:
                        return self._answer(400, {"code": 9, "message": "another operation is already in progress"})
                    app.start_sync()
                    return self._answer(200, app.as_json())
                return self._answer(404, {"code": 5, "message": "Not Found"})

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def argocd(monkeypatch):
    servers = []

    def start(*apps, **kwargs) -> FakeArgoCD:
        server = FakeArgoCD(*apps, **kwargs)
        servers.append(server)
        monkeypatch.setenv("ARGOCD_SERVER", server.url)
        monkeypatch.setenv("ARGOCD_AUTH_TOKEN", TOKEN)
        return server

    yield start
    for server in servers:
        server.stop()


def sync(app="school-payments-dev", revision=NEW_COMMIT, timeout="5"):
    return argocd_sync.main(["--app", app, "--revision", revision, "--timeout", timeout, "--interval", "0.01"])


def test_syncs_and_waits_until_the_new_commit_is_synced_and_healthy(argocd, capsys):
    server = argocd(FakeApplication("school-payments-dev"))
    assert sync() == 0
    out = capsys.readouterr().out
    assert f"school-payments-dev: {NEW_COMMIT[:12]} is synced and healthy" in out
    assert "health=Progressing" in out  # it waited through the rollout
    method, path, body = server.requests[0]
    assert (method, path) == ("GET", "/api/v1/applications/school-payments-dev?refresh=normal")
    assert server.requests[1] == ("POST", "/api/v1/applications/school-payments-dev/sync", {"name": "school-payments-dev", "prune": True})
    assert all(request[:2] == ("GET", "/api/v1/applications/school-payments-dev") for request in server.requests[2:])


def test_a_sync_already_started_by_argo_cd_is_waited_for(argocd, capsys):
    app = FakeApplication("school-payments-staging-release-1.4")
    server = argocd(app)
    app.head_revision = NEW_COMMIT
    app.start_sync()  # automated sync noticed the commit first
    assert sync("school-payments-staging-release-1.4") == 0
    assert "a sync is already running; waiting for it" in capsys.readouterr().out
    assert [r[0] for r in server.requests].count("POST") == 1


def test_a_failed_sync_fails_the_deploy(argocd, capsys):
    argocd(FakeApplication("school-payments-dev", end_phase="Failed"))
    assert sync() == 1
    assert f"the sync of {NEW_COMMIT[:12]} failed: one or more objects failed to apply" in capsys.readouterr().out


def test_a_rollout_that_never_becomes_healthy_times_out(argocd, capsys):
    argocd(FakeApplication("school-payments-dev", end_health="Degraded"))
    assert sync(timeout="0.5") == 1
    assert "not synced and healthy" in capsys.readouterr().out


def test_a_commit_argo_cd_never_sees_times_out(argocd, capsys):
    argocd(FakeApplication("school-payments-dev", git_revision=OLD_COMMIT))  # the push did not land
    assert sync(timeout="0.3") == 1
    assert f"not synced and healthy at {NEW_COMMIT[:12]}" in capsys.readouterr().out


def test_a_wrong_token_is_a_clear_error(argocd, monkeypatch, capsys):
    argocd(FakeApplication("school-payments-dev"))
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", "expired")
    assert sync() == 2
    assert "Argo CD refused: GET /api/v1/applications/school-payments-dev?refresh=normal: HTTP 401 no session information" in capsys.readouterr().err


def test_the_ci_role_cannot_sync_production(argocd, capsys):
    argocd(FakeApplication("school-payments-dev"), FakeApplication("school-payments-prod"), allowed={"school-payments-dev"})
    assert sync("school-payments-prod") == 2
    assert "HTTP 403 permission denied" in capsys.readouterr().err


def test_without_server_or_token_it_says_what_is_missing(monkeypatch, capsys):
    monkeypatch.delenv("ARGOCD_SERVER", raising=False)
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", TOKEN)
    assert sync() == 2
    assert "ARGOCD_SERVER (https://...) and ARGOCD_AUTH_TOKEN must be set" in capsys.readouterr().err


def test_an_unreachable_server_fails_without_a_traceback(monkeypatch, capsys):
    from tests.conftest import free_port

    monkeypatch.setenv("ARGOCD_SERVER", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", TOKEN)
    assert sync() == 1
    assert "Argo CD unreachable" in capsys.readouterr().err
