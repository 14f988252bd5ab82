"""The API's JSON parser: DRF's, decoding with the same limits as webhook bodies
(``providers.json_limits``: nesting depth, number sizes, NUL, UTF-8), so no request body can
make a view fail with a server error or cost more than its size."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from providers.json_limits import JsonRefused, loads_limited


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        if stream is None:  # an empty body: DRF passes no stream
            raise ParseError("JSON parse error - the body is empty")
        body = stream.read(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
        try:
            return loads_limited(body)
        except JsonRefused as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
