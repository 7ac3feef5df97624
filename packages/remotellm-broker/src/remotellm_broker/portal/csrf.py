"""CSRF tokens for the portal's state-changing forms (rotate key, log out).

A synchroniser token: a random value minted at login, kept in the encrypted session cookie and
echoed in a hidden form field. A cross-site page can make the browser send the cookie (well,
not with ``SameSite=Lax`` on a POST — this is the second lock) but cannot read the token.
"""

from __future__ import annotations

import hmac
import secrets

__all__ = ["CSRF_FIELD", "csrf_matches", "new_csrf_token"]

CSRF_FIELD = "csrf_token"


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, submitted: object) -> bool:
    """Constant-time check that the form echoed the session's token."""
    if not expected or not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())
