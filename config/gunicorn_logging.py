"""gunicorn's logger for the image: no access log unless GUNICORN_ACCESSLOG asks for one, and then
one that cannot write a secret.

gunicorn writes an access line whenever a logging config is given (ours is, for JSON lines), and
its atoms hold the whole request line, query string, Referer and every header: pay-link tokens,
M-Pesa's ``?t=`` token, QuickBooks' OAuth ``code`` and ``state``, cookies. This logger writes only
when asked (the ingress logs requests), and then only the method, the path with its query
removed and pay-link tokens masked (``ops.logs.mask_path``), the status, the size, the duration and
the request id.
"""

from __future__ import annotations

from gunicorn.glogging import Logger

from ops.logs import mask_path

# The atoms that may appear in access_log_format; everything else is left out ("-").
SAFE_ATOMS = ("h", "t", "m", "s", "B", "b", "T", "D", "M", "L", "p", "H")
SAFE_HEADERS = ("{x-request-id}o", "{user-agent}i")
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms %({x-request-id}o)s'


class RedactingLogger(Logger):
    def access(self, resp, req, environ, request_time):
        if not self.cfg.accesslog:  # only when GUNICORN_ACCESSLOG names a destination
            return
        super().access(resp, req, environ, request_time)

    def atoms(self, resp, req, environ, request_time):
        everything = super().atoms(resp, req, environ, request_time)
        atoms = {name: everything[name] for name in (*SAFE_ATOMS, *SAFE_HEADERS) if name in everything}
        path = mask_path(environ.get("PATH_INFO") or "")
        atoms["U"] = path
        atoms["r"] = f"{environ.get('REQUEST_METHOD')} {path} {environ.get('SERVER_PROTOCOL')}"
        return atoms
