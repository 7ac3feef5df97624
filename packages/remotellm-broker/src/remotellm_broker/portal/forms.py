"""Reading the portal's small inputs safely: its two forms and the OAuth callback's query.

The portal's forms (rotate key, log out) carry one CSRF token, a few dozen bytes. The broker's
app allows request bodies of ``max_body_bytes`` (16 MiB) for the OpenAI API, so the portal
never uses ``request.post()``: handlers check the session and the Origin first, and only then
call :func:`read_form`, which takes at most :data:`FORM_MAX_BYTES` within
:data:`FORM_READ_TIMEOUT_S`. A stranger's POST is answered before a byte of its body is read,
and a member's slow or oversized one costs a few KiB for a few seconds.

Anything malformed (wrong content type, bad percent-encoding or UTF-8, repeated or too many
fields, control characters) raises :class:`BadInput`, which the portal turns into a 4xx page
and one warning line: never a 500.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from aiohttp import web

__all__ = ["FORM_MAX_BYTES", "FORM_READ_TIMEOUT_S", "BadInput", "read_form", "read_query"]

#: The portal's forms hold a CSRF token (43 characters) and little else.
FORM_MAX_BYTES = 4096
#: A browser sends a form this small in one packet; a client dribbling it gets 408.
FORM_READ_TIMEOUT_S = 10.0
#: More fields than any portal form or callback has.
_MAX_FIELDS = 16
_FORM_TYPE = "application/x-www-form-urlencoded"


class BadInput(Exception):
    """The request's form or query cannot be what the portal's pages send."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_form(
    request: web.Request,
    *,
    max_bytes: int = FORM_MAX_BYTES,
    timeout_s: float | None = None,
) -> dict[str, str]:
    """The urlencoded form of ``request``, read with a size cap and a deadline."""
    if request.body_exists and request.content_type != _FORM_TYPE:
        raise BadInput(400, "content_type")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BadInput(413, "too_large")
    body = bytearray()
    try:
        async with asyncio.timeout(FORM_READ_TIMEOUT_S if timeout_s is None else timeout_s):
            while len(body) <= max_bytes:
                chunk = await request.content.read(max_bytes + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        raise BadInput(408, "read_timeout") from None
    except (web.RequestPayloadError, web.HTTPException, ConnectionError, ValueError):
        raise BadInput(400, "unreadable") from None
    if len(body) > max_bytes:
        raise BadInput(413, "too_large")
    try:
        text = bytes(body).decode("ascii")
    except UnicodeDecodeError:
        raise BadInput(400, "not_urlencoded") from None
    return _parse(text)


def read_query(request: web.Request) -> dict[str, str]:
    """The query string as parsed by the rules of :func:`read_form`."""
    raw = request.rel_url.raw_query_string
    if not raw.isascii():
        raise BadInput(400, "query_not_ascii")
    return _parse(raw)


def _parse(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except (ValueError, UnicodeError):  # bad UTF-8 after %-decoding, too many fields
        raise BadInput(400, "malformed") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise BadInput(400, "repeated_field")
        if not (name + value).isprintable():
            raise BadInput(400, "control_characters")
        fields[name] = value
    return fields
