"""The one reading of credentials from request headers, for the API and the relay.

- ``Authorization: Bearer <token>``: the scheme is case-insensitive, the token is what
  follows the first space, surrounding whitespace stripped. Another scheme presents no
  bearer token.
- The API also takes ``x-api-key`` (Anthropic clients) and ``api-key`` (Azure-style
  clients), in that order, when no ``Authorization`` header is sent. An ``Authorization``
  header of another scheme presents the empty key: it is not a missing key (401 "incorrect"
  rather than 401 "you didn't provide"), and it does not fall back to the other headers.

Nothing here decides whether a credential is valid; ``plausible`` only rules out what no
stored secret can be (empty, over-long, non-ASCII or unprintable) before a lookup.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["MAX_API_KEY_CHARS", "api_key", "bearer_token", "plausible"]

MAX_API_KEY_CHARS = 256
"""The longest API key the broker looks up."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` value of the Bearer scheme, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def api_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request presents, or None when it presents none at all."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        return bearer_token(authorization) or ""
    key = (headers.get("x-api-key") or headers.get("api-key") or "").strip()
    return key or None


def plausible(secret: str, max_chars: int | None = None) -> bool:
    """Whether ``secret`` could be a stored secret: non-empty printable ASCII, at most
    ``max_chars`` characters when a bound is given."""
    if max_chars is not None and len(secret) > max_chars:
        return False
    return bool(secret) and secret.isascii() and secret.isprintable()
