"""Sync an Argo CD Application now and wait until it runs a given commit, synced and healthy.

    ARGOCD_SERVER=https://argocd.example.org ARGOCD_AUTH_TOKEN=... \\
        python tools/argocd_sync.py --app school-payments-dev --revision <commit sha>

The deploy workflow runs it after committing the new image tag to an environment's overlay, so a
deployment does not wait for Argo CD's next poll of the repository (3 minutes by default) and
the workflow fails when the rollout does. Through Argo CD's REST API (what the argocd CLI calls):
refresh the Application from git, sync it to its target revision, then poll it. The token is a
project role's (argocd/project.yaml, role "ci"): it may get and sync the dev and staging
Applications, nothing else. Standard library only: it runs on a bare CI runner.

Exit status: 0 when the Application is Synced at the revision and Healthy; 1 when the sync
failed, the revision did not arrive, or it is not healthy within --timeout; 2 for a usage,
authentication or permission error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

REQUEST_TIMEOUT_SECONDS = 30
FAILED_PHASES = {"Failed", "Error"}


class ArgoCDError(RuntimeError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ArgoCD:
    def __init__(self, server: str, token: str) -> None:
        self.server = server.rstrip("/")
        self.token = token

    def _request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.server}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:  # noqa: S310 - https URL from the caller
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("message", "")
            except ValueError:
                detail = ""
            raise ArgoCDError(f"{method} {path}: HTTP {exc.code} {detail}".strip(), status=exc.code) from None

    def application(self, name: str, *, refresh: bool = False) -> dict[str, Any]:
        query = "?refresh=normal" if refresh else ""
        return self._request("GET", f"/api/v1/applications/{urllib.parse.quote(name)}{query}")

    def sync(self, name: str) -> None:
        self._request("POST", f"/api/v1/applications/{urllib.parse.quote(name)}/sync", {"name": name, "prune": True})


def state(application: dict[str, Any]) -> tuple[str, str, str, str, str]:
    status = application.get("status", {})
    operation = status.get("operationState", {})
    return (
        status.get("sync", {}).get("status", ""),
        status.get("sync", {}).get("revision", ""),
        status.get("health", {}).get("status", ""),
        operation.get("phase", ""),
        operation.get("message", ""),
    )


def sync_and_wait(
    argocd: ArgoCD, app: str, revision: str, *, timeout: float, interval: float = 5.0, log=print
) -> bool:
    argocd.application(app, refresh=True)  # fetch the new commit now, not at the next poll
    try:
        argocd.sync(app)
        log(f"{app}: sync started")
    except ArgoCDError as exc:
        # Automated sync may have started one already: then wait for it.
        if "another operation is already in progress" not in str(exc):
            raise
        log(f"{app}: a sync is already running; waiting for it")
    deadline = time.monotonic() + timeout
    last = None
    while True:
        sync_status, synced_revision, health, phase, message = state(argocd.application(app))
        current = (sync_status, synced_revision[:12], health, phase)
        if current != last:
            log(f"{app}: sync={sync_status} revision={synced_revision[:12]} health={health} operation={phase}")
            last = current
        if synced_revision == revision and phase in FAILED_PHASES:
            log(f"{app}: the sync of {revision[:12]} failed: {message}")
            return False
        if synced_revision == revision and sync_status == "Synced" and health == "Healthy" and phase not in {"Running", "Terminating"}:
            log(f"{app}: {revision[:12]} is synced and healthy")
            return True
        if time.monotonic() >= deadline:
            log(f"{app}: not synced and healthy at {revision[:12]} after {timeout:.0f}s (sync={sync_status}, health={health}, operation={phase}: {message})")
            return False
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", required=True, help="the Application's name")
    parser.add_argument("--revision", required=True, help="the commit it must run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait (default 600)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between polls (default 5)")
    args = parser.parse_args(argv)
    server, token = os.environ.get("ARGOCD_SERVER", ""), os.environ.get("ARGOCD_AUTH_TOKEN", "")
    if not server.startswith(("https://", "http://")) or not token:
        print("ARGOCD_SERVER (https://...) and ARGOCD_AUTH_TOKEN must be set", file=sys.stderr)
        return 2
    try:
        ok = sync_and_wait(ArgoCD(server, token), args.app, args.revision, timeout=args.timeout, interval=args.interval)
    except ArgoCDError as exc:
        print(f"Argo CD refused: {exc}", file=sys.stderr)
        return 2 if exc.status in {400, 401, 403, 404} else 1
    except (urllib.error.URLError, TimeoutError) as exc:
        print(f"Argo CD unreachable: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
