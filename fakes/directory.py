"""A fake School Directory API (the contract in docs/webhooks.md and ``directory_client.client``).

Test controls: ``fail_next(n, status)`` answers the next n look-ups with an error status,
``delay_seconds`` slows every answer down (to trigger client timeouts).
"""

from __future__ import annotations

import time

from fakes.server import FakeApp, Request, Response, json_response

DEMO_TOKEN = "demo-directory-token"

# (school, provider, provider_student_id) -> (student_id, full_name)
DEMO_STUDENTS: dict[tuple[str, str, str], tuple[str, str]] = {
    ("ng", "surepay", "prov-001"): ("STU-0001", "Amina Nakato"),
    ("ng", "surepay", "prov-002"): ("STU-0002", "Brian Okello"),
    ("ng", "surepay", "prov-003"): ("STU-0003", "Grace Atim"),
    ("ng", "dummy", "STU-0001"): ("STU-0001", "Amina Nakato"),
    ("ng", "dummy", "STU-0002"): ("STU-0002", "Brian Okello"),
    ("ng", "dummy", "STU-0003"): ("STU-0003", "Grace Atim"),
}


class FakeDirectory(FakeApp):
    def __init__(self, token: str = DEMO_TOKEN, students: dict | None = None) -> None:
        super().__init__()
        self.token = token
        self.students = dict(DEMO_STUDENTS if students is None else students)
        self.delay_seconds = 0.0
        self._failures: list[int] = []

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self._failures.extend([status] * count)

    def add_student(self, school: str, provider: str, provider_student_id: str, student_id: str, name: str) -> None:
        with self.lock:
            self.students[(school, provider, provider_student_id)] = (student_id, name)

    def lookups(self) -> list:
        return [r for r in self.requests if r.path == "/students/lookup"]

    def handle(self, request: Request) -> Response:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return json_response(401, {"detail": "invalid token"})
        with self.lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure:
            return json_response(failure, {"detail": "simulated outage"})
        if request.method != "GET" or request.path != "/students/lookup":
            return json_response(404, {"detail": "not found"})
        key = tuple(request.query.get(name, [""])[0] for name in ("school", "provider", "provider_student_id"))
        found = self.students.get(key)
        if found is None:
            return json_response(404, {"detail": "unknown student"})
        return json_response(200, {"student_id": found[0], "full_name": found[1], "school": key[0]})
