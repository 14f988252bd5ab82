"""API authentication: hashed tokens (django-rest-knox). Only a SHA-512 digest of each token is
stored, so reading the database gives no API access; the token itself is shown once, when it is
made (admin: API tokens > Add, or ``manage.py create_api_token``). Clients send it as before:
``Authorization: Token <key>``."""

from __future__ import annotations

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication
from rest_framework import exceptions

# Knox's tokens are 64 hex characters; tokens migrated from DRF's authtoken are 40.
_TOKEN_SHAPE = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")


class HashedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, token: bytes):
        # A header that cannot be a token is refused before any query (knox would decode it as
        # UTF-8 and look up its first characters, NUL and all).
        if not _TOKEN_SHAPE.fullmatch(token):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)


class HashedTokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme (``tokenAuth``, as with DRF's TokenAuthentication)."""

    target_class = HashedTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Token-based authentication with required prefix "Token"',
        }
