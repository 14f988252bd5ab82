"""Intuit's OAuth 2.0 endpoints of the fake (docs/reference/quickbooks.md §1)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from urllib.parse import parse_qs, urlencode

from fakes.quickbooks.company import _Grant, _Token
from fakes.quickbooks.wire import _json
from fakes.server import Request, Response


class OAuthEndpoints:
    """Discovery, authorization, token (with refresh-token rotation) and revocation."""

    @staticmethod
    def discovery(base_url: str, *, browser_base_url: str | None = None) -> dict:
        return {
            "issuer": "https://oauth.platform.intuit.com/op/v1",
            # The one endpoint the user's browser visits (the consent screen).
            "authorization_endpoint": f"{browser_base_url or base_url}/connect/oauth2",
            "token_endpoint": f"{base_url}/oauth2/v1/tokens/bearer",
            "userinfo_endpoint": f"{base_url}/v1/openid_connect/userinfo",
            "revocation_endpoint": f"{base_url}/oauth2/v1/tokens/revoke",
            "jwks_uri": f"{base_url}/op/v1/jwks",
            "response_types_supported": ["code"],
            "scopes_supported": ["openid", "email", "profile", "address", "phone", "com.intuit.quickbooks.accounting"],
        }

    def authorize(self, request: Request) -> Response:
        query = {key: values[0] for key, values in request.query.items()}
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return _json(400, {"error": "invalid_request"})
        redirect = query.get("redirect_uri", "")
        with self.lock:
            declined, self.decline_next_consent = self.decline_next_consent, False
            realm = self.consent_realm
            if declined or realm is None:
                params = {"error": "access_denied", "state": query.get("state", "")}
            else:
                code = secrets.token_urlsafe(24)
                self._codes[code] = {"realm": realm, "redirect_uri": redirect, "used": False, "grant": None}
                params = {"code": code, "state": query.get("state", ""), "realmId": realm}
        return 302, {"Location": f"{redirect}?{urlencode(params)}"}, b""

    def _client_ok(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _issue(self, grant: _Grant) -> tuple[str, str]:
        access, refresh = "at-" + secrets.token_urlsafe(24), "rt-" + secrets.token_urlsafe(24)
        now = time.time()
        self._access[access] = _Token(grant, now + self.access_token_seconds)
        self._refresh[refresh] = _Token(grant, now + self.refresh_token_seconds)
        return access, refresh

    def _token_body(self, access: str, refresh: str) -> dict:
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": self.access_token_seconds,
            "x_refresh_token_expires_in": self.refresh_token_seconds,
        }

    def token(self, request: Request) -> Response:
        with self.lock:
            self.token_calls += 1
        if self.token_latency_seconds:
            time.sleep(self.token_latency_seconds)
        if request.method != "POST":
            return _json(405, {"error": "method_not_allowed"})
        if not self._client_ok(request):
            return _json(401, {"error": "invalid_client"})
        form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
        invalid = _json(400, {"error": "invalid_grant", "error_description": "Incorrect or invalid token"})
        with self.lock:
            if form.get("grant_type") == "authorization_code":
                code = self._codes.get(form.get("code", ""))
                if code is None or code["redirect_uri"] != form.get("redirect_uri"):
                    return invalid
                if code["used"]:
                    # docs/reference/quickbooks.md §1.3: exchanging a code twice invalidates what it issued.
                    if code["grant"] is not None:
                        code["grant"].revoked = True
                    return invalid
                code["used"] = True
                code["grant"] = _Grant(code["realm"])
                return _json(200, self._token_body(*self._issue(code["grant"])))
            if form.get("grant_type") == "refresh_token":
                token = self._refresh.get(form.get("refresh_token", ""))
                if token is None or not token.current or token.grant.revoked or token.expires_at < time.time():
                    return invalid
                access = "at-" + secrets.token_urlsafe(24)
                self._access[access] = _Token(token.grant, time.time() + self.access_token_seconds)
                if self.rotate_refresh_tokens:
                    token.current = False  # strict rotation: the used token never works again
                    refresh = "rt-" + secrets.token_urlsafe(24)
                    self._refresh[refresh] = _Token(token.grant, time.time() + self.refresh_token_seconds)
                else:
                    refresh = form["refresh_token"]
                    token.expires_at = time.time() + self.refresh_token_seconds
                return _json(200, self._token_body(access, refresh))
        return _json(400, {"error": "unsupported_grant_type"})

    def revoke(self, request: Request) -> Response:
        with self.lock:
            self.token_calls += 1
        if not self._client_ok(request):
            return _json(401, {"error": "invalid_client"})
        try:
            value = json.loads(request.body or b"{}").get("token", "")
        except ValueError:
            return _json(400, {"error": "invalid_request"})
        with self.lock:
            token = self._refresh.get(value) or self._access.get(value)
            if token is not None:
                token.grant.revoked = True
        return 200, {"Content-Type": "application/json"}, b""
