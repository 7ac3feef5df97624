"""Browser sessions for the portal: encrypted cookies, the pending login, the signed-in user.

The session lives entirely in an aiohttp-session ``EncryptedCookieStorage`` cookie (Fernet:
AES-CBC + HMAC, with a timestamp the storage checks against ``max_age``), so the broker keeps no
session table and restarts do not log anyone out. What it holds is small and never secret to the
user themselves: the pending login's ``state`` and PKCE verifier, then the user id and a CSRF
token. The API key is never put in it.

Because the cookie is the only record, a copied cookie could replay a pending login; the
:class:`SpentStates` memory refuses a ``state`` that was already used, whatever cookie comes
with it. A signed-in session also carries the user's ``session_epoch`` from users.yaml; logging
out bumps that epoch, so every copy of a cookie issued before is dead on every broker replica
(the portal compares the two on each request: ``routes.Portal._signed_in``).
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp_session import Session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from remotellm_broker.portal.csrf import new_csrf_token
from remotellm_broker.portal.oauth import PendingLogin

__all__ = [
    "COOKIE_NAME",
    "LOGIN_TTL_S",
    "SESSION_MAX_AGE_S",
    "SpentStates",
    "csrf_token",
    "current_user_id",
    "fernet_from_secret",
    "make_storage",
    "remember_pending",
    "session_epoch",
    "sessions_for",
    "start_user_session",
    "take_pending",
]

COOKIE_NAME = "remotellm_portal"
SESSION_MAX_AGE_S = 8 * 3600  # a working day; only the portal pages need it, not the API
LOGIN_TTL_S = 600.0  # as long as GitLab keeps an authorization code alive

_PENDING = "login"
_USER = "uid"
_CSRF = "csrf"
_EPOCH = "ep"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fernet_from_secret(secret: str) -> Fernet:
    """A Fernet key derived from the operator's ``session_secret`` (any length, any text).

    HKDF with a fixed purpose label: the same secret used elsewhere yields an unrelated key.
    """
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"remotellm-broker portal session cookie v1",
    ).derive(secret.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def make_storage(session_secret: str, *, secure: bool) -> EncryptedCookieStorage:
    return EncryptedCookieStorage(
        fernet_from_secret(session_secret),
        cookie_name=COOKIE_NAME,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        secure=secure,
        httponly=True,
        samesite="Lax",  # sent on the top-level redirect back from GitLab, not on cross-site POSTs
    )


def sessions_for(storage: EncryptedCookieStorage) -> Callable[[Handler], Handler]:
    """Wrap one handler in aiohttp-session's middleware.

    The portal shares the public app with the OpenAI API; installing the middleware app-wide
    would put session handling in front of every streamed completion. Wrapping only the
    portal's handlers keeps the API path untouched.
    """
    middleware = session_middleware(storage)

    def wrap(handler: Handler) -> Handler:
        async def with_session(request: web.Request) -> web.StreamResponse:
            return await middleware(request, handler)

        return with_session

    return wrap


def remember_pending(session: Session, pending: PendingLogin) -> None:
    session[_PENDING] = {
        "state": pending.state,
        "verifier": pending.code_verifier,
        "at": pending.started_at,
    }


def take_pending(session: Session, now: float) -> PendingLogin | None:
    """Remove and return the pending login, if there is a fresh one: a state works once."""
    raw = session.pop(_PENDING, None)
    if not isinstance(raw, dict):
        return None
    state, verifier, started = raw.get("state"), raw.get("verifier"), raw.get("at")
    if not (isinstance(state, str) and state and isinstance(verifier, str) and verifier):
        return None
    if not isinstance(started, (int, float)) or not 0 <= now - started <= LOGIN_TTL_S:
        return None
    return PendingLogin(state=state, code_verifier=verifier, started_at=float(started))


async def start_user_session(
    request: web.Request, user_id: str, *, created: str, epoch: int
) -> Session:
    """A brand-new session for a freshly logged-in user (nothing from before login survives),
    valid while the user record made at ``created`` still has ``session_epoch == epoch``.
    (``created`` tells a record deleted and made again apart from the old one, whose epoch
    count starts over.)"""
    session = await new_session(request)
    session[_USER] = user_id
    session[_CSRF] = new_csrf_token()
    session[_EPOCH] = [created, epoch]
    return session


def session_epoch(session: Session) -> tuple[str, int] | None:
    """The (record created, epoch) pair the session was issued at."""
    value = session.get(_EPOCH)
    if not isinstance(value, list) or len(value) != 2:
        return None
    created, epoch = value
    if not isinstance(created, str) or not isinstance(epoch, int) or isinstance(epoch, bool):
        return None
    return created, epoch


def current_user_id(session: Session) -> str | None:
    user_id = session.get(_USER)
    return user_id if isinstance(user_id, str) and user_id else None


def csrf_token(session: Session) -> str | None:
    token = session.get(_CSRF)
    return token if isinstance(token, str) and token else None


class SpentStates:
    """The ``state`` values already used, kept for as long as one could still be replayed."""

    def __init__(self, *, ttl_s: float = LOGIN_TTL_S, max_entries: int = 100_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def spend(self, state: str, now: float | None = None) -> bool:
        """Mark ``state`` used; False if it was used before (a replay)."""
        now = time.monotonic() if now is None else now
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= self._ttl_s and len(self._seen) < self._max:
                break
            del self._seen[oldest]
        if state in self._seen:
            return False
        self._seen[state] = now
        return True
