"""What of a connector's ``head`` reaches the client: a status, and an allowlist of headers.

A connector token holder is trusted to serve answers, not to speak HTTP to the broker's
clients. The broker writes every status line and frames every body itself (``Content-Type``,
length or chunking); from ``head`` it takes only a status that is a final status carrying a
body, and the few headers below. Everything else a connector sends is dropped: ``Set-Cookie``
would plant cookies for the portal's origin, ``Location`` would redirect, ``Content-Length``,
``Transfer-Encoding`` and the hop-by-hop headers would let it frame (and so smuggle)
responses on the client's keep-alive connection.

The protocol sessions refuse the statuses already; the check is repeated here because the
broker must hold whatever protocol release is installed next to it.

Pure: no aiohttp, so the rules are unit-tested on their own (docs/protocol.md keeps the
table in sync).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MAX_HEADER_VALUE", "client_headers", "is_response_status"]

#: Longest header value relayed; a longer one is dropped.
MAX_HEADER_VALUE = 256

#: Statuses whose responses carry no body (RFC 9110 §15).
_NO_BODY = frozenset({204, 205, 304})

#: ``Retry-After`` is delay-seconds or an HTTP date (RFC 9110 §10.2.3).
_RETRY_AFTER = re.compile(r"\d{1,9}|[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT")
_RETRY_STATUSES = frozenset({429, 503})

#: ``type/subtype`` and parameters (RFC 9110 §8.3), printable ASCII only.
_CONTENT_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(;[ -~]*)?")


def is_response_status(status: int) -> bool:
    """True when ``status`` may start a response the broker relays: 200-599 but the three
    statuses that never carry a body."""
    return 200 <= status <= 599 and status not in _NO_BODY


def client_headers(status: int, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The headers of a connector's ``head`` that reach the client, by canonical name.

    - ``Content-Type``, when it is a media type;
    - ``Retry-After`` of a 429 or 503, when it is delay-seconds or an HTTP date.

    A value with anything but printable ASCII (CR, LF and NUL included) or longer than
    ``MAX_HEADER_VALUE`` is dropped; the first acceptable occurrence of a name wins.
    """
    out: dict[str, str] = {}
    for name, value in headers:
        if len(value) > MAX_HEADER_VALUE or not _printable_ascii(value):
            continue
        value = value.strip()
        match name.lower():
            case "content-type" if _CONTENT_TYPE.fullmatch(value):
                out.setdefault("Content-Type", value)
            case "retry-after" if status in _RETRY_STATUSES and _RETRY_AFTER.fullmatch(value):
                out.setdefault("Retry-After", value)
    return out


def _printable_ascii(value: str) -> bool:
    return value.isascii() and value.isprintable()
