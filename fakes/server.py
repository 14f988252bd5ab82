"""A tiny threaded WSGI server and request recording shared by every fake."""

from __future__ import annotations

import html
import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any, Callable
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Request(RecordedRequest):
    route_params: dict[str, str] = field(default_factory=dict)


Response = tuple[int, dict[str, str], bytes]


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def read_request(environ) -> Request:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    headers = {
        key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    return Request(
        method=environ["REQUEST_METHOD"],
        path=environ.get("PATH_INFO", ""),
        query=parse_qs(environ.get("QUERY_STRING", "")),
        headers=headers,
        body=body,
    )


def html_page(status: int, title: str, body: str, headers: dict[str, str] | None = None) -> Response:
    """A fake provider's hosted page (its checkout, M-Pesa's phone): plain HTML, no script."""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return status, {"Content-Type": "text/html; charset=utf-8", **(headers or {})}, page.encode()


def checkout_page(provider: str, amount: str, hint: str, *, can_decline: bool = False) -> Response:
    """A fake provider's hosted checkout: the amount, its test details, Pay, Cancel and, where
    the provider reports a refused card back to the merchant, Decline."""
    decline = '<button type="submit" name="action" value="decline">Decline</button> ' if can_decline else ""
    body = (
        f"<p>{html.escape(provider)} test checkout (local fake): no money moves. {html.escape(hint)}</p>"
        f"<p>Amount: <strong>{html.escape(amount)}</strong></p>"
        '<form method="post"><button type="submit" name="action" value="pay">Pay</button> '
        f'{decline}<button type="submit" name="action" value="back">Cancel</button></form>'
    )
    return html_page(200, f"{provider} checkout", body)


def hmac_hex(secret: bytes, message: bytes, algorithm: str = "sha256") -> str:
    import hashlib
    import hmac

    return hmac.new(secret, message, getattr(hashlib, algorithm)).hexdigest()


def redirect(url: str) -> Response:
    return 303, {"Location": url}, b""


def form_fields(request: "Request") -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(request.body.decode()).items()}


class FakeApp:
    """Base of a fake: records every request; subclasses implement ``handle``.

    A fake that serves hosted pages to a browser (a checkout) is told where the browser reaches
    it (``public_url``), and delivers its webhooks to ``webhook_endpoints`` ((url, secret) pairs:
    what a merchant registers in the provider's dashboard)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.public_url = ""
        self.webhook_endpoints: list[tuple[str, str]] = []

    def deliver(self, body: bytes, headers_for: Callable[[bytes, str], dict[str, str]]) -> list[int]:
        """POST ``body`` to every registered endpoint, signed with its secret; the statuses."""
        statuses = []
        for url, secret in list(self.webhook_endpoints):
            statuses.append(post_json(url, body, headers_for(body, secret)))
        return statuses

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def __call__(self, environ, start_response):
        request = read_request(environ)
        with self.lock:
            self.requests.append(
                RecordedRequest(request.method, request.path, request.query, request.headers, request.body)
            )
        status, headers, body = self.handle(request)
        start_response(f"{status} {_REASONS.get(status, 'Status')}", list(headers.items()))
        return [body]


def post_json(url: str, body: bytes, headers: dict[str, str]) -> int:
    """One delivery, with a timeout, as a provider's webhook sender makes it; the status."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own service
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class PrefixRouter:
    """Mounts several fakes under path prefixes on one port (``/directory``, ``/qbo``, ...)."""

    def __init__(self, mounts: dict[str, Callable]):
        self.by_prefix = dict(mounts)
        self.mounts = sorted(mounts.items(), key=lambda item: -len(item[0]))

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ = dict(environ, PATH_INFO=path[len(prefix):] or "/", SCRIPT_NAME=prefix)
                return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"detail": "no fake mounted here"}']


class RunningServer:
    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.httpd = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.host, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=f"fake:{self.port}", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> RunningServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    return RunningServer(app, host, port).start()


_REASONS = {
    200: "OK", 201: "Created", 303: "See Other", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable",
}  # fmt: skip
