"""The portal's HTTP handlers: ``/``, ``/auth/login``, ``/auth/callback``, ``/auth/rotate``,
``/auth/logout``.

Flow: ``/auth/login`` puts a fresh ``state`` + PKCE verifier in the session and redirects to
GitLab; ``/auth/callback`` takes them out again (single use), refuses anything that does not
match before talking to GitLab, then swaps the code for a token, reads GitLab's OpenID Connect
userinfo, applies the operator's access rules (``access.py``: a stranger gets the "no access"
page and no record), records the login in the user store and starts a new session. A first
login gets a key, rendered into that very response and nowhere else (not the session, not a
URL, not a log). A returning user lands on ``/``, which shows the key's prefix and a
CSRF-protected "rotate" button. Failure pages live in ``failures.py``.

Every signed-in request is checked against users.yaml (``_signed_in``): the user must still
exist and the session's epoch must be the user's current one, which logout bumps, so a copy of
the cookie taken before logout is worthless. POSTs check the session and the Origin before
reading a byte of the body, and read it with ``forms.read_form`` (4 KiB, 10 s).

Redirects only ever go to GitLab's configured authorize URL or to ``/``: no parameter of the
request chooses where the browser goes next.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web
from aiohttp_session import Session, get_session

from remotellm_broker.__about__ import __version__
from remotellm_broker.portal import failures
from remotellm_broker.portal.admins import remember_groups
from remotellm_broker.portal.csrf import CSRF_FIELD, csrf_matches
from remotellm_broker.portal.examples import (
    PLACEHOLDER_MODEL,
    ModelIds,
    example_model,
    listed_models,
)
from remotellm_broker.portal.forms import BadInput, read_form, read_query
from remotellm_broker.portal.oauth import (
    BadCallback,
    GitLabOAuth,
    GitLabRefused,
    GitLabUnavailable,
    GitLabUser,
)
from remotellm_broker.portal.pages import render
from remotellm_broker.portal.sessions import (
    SpentStates,
    csrf_token,
    current_user_id,
    remember_pending,
    session_epoch,
    start_user_session,
    take_pending,
)
from remotellm_broker.portal.settings import PortalConfig
from remotellm_broker.users import UserRecord, UserStore, UserStoreError

__all__ = ["Portal"]

log = structlog.get_logger(__name__)

GITLAB_TIMEOUT = aiohttp.ClientTimeout(total=10.0, connect=5.0)


class Portal:
    """The portal's handlers and what they share (config, store, GitLab client)."""

    def __init__(
        self, config: PortalConfig, store: UserStore, model_ids: ModelIds | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.model_ids = model_ids
        self.spent_states = SpentStates()
        self._oauth: GitLabOAuth | None = None

    async def gitlab_client(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: one pooled HTTP client for GitLab while the app runs."""
        headers = {"User-Agent": f"remotellm-broker/{__version__}"}
        async with aiohttp.ClientSession(timeout=GITLAB_TIMEOUT, headers=headers) as http:
            self._oauth = GitLabOAuth(
                gitlab_url=self.config.gitlab_url,
                client_id=self.config.client_id,
                client_secret=self.config.client_secret,
                redirect_uri=self.config.redirect_uri,
                http=http,
            )
            yield
            self._oauth = None

    @property
    def oauth(self) -> GitLabOAuth:
        if self._oauth is None:  # pragma: no cover - handlers only run inside the app's life
            raise RuntimeError("the portal's GitLab client is not running")
        return self._oauth

    # -- pages ---------------------------------------------------------------------------------

    def _page(
        self, template: str, *, status: int = 200, session: Session | None = None, **context: object
    ) -> web.Response:
        user = context.pop("user", None)
        return render(
            template,
            status=status,
            user=user,
            csrf=csrf_token(session) if session is not None and user is not None else None,
            api_url=self.config.api_url,
            gitlab_host=self.config.gitlab_host,
            **context,
        )

    def _key_page(
        self, user: UserRecord, key: str, session: Session, *, rotated: bool
    ) -> web.Response:
        models = self.model_ids() if self.model_ids is not None else ()
        return self._page(
            "key.html",
            session=session,
            user=user,
            key=key,
            rotated=rotated,
            model=example_model(models),
            models=listed_models(models),
            placeholder_model=PLACEHOLDER_MODEL,
            forget_url=True,
        )

    def _redirect_home(self) -> web.Response:
        return _redirect("/")

    # -- handlers ------------------------------------------------------------------------------

    def _signed_in(self, session: Session) -> UserRecord | None:
        """The user this session belongs to, if it is still valid: the user exists and the
        session was issued at the user's current epoch (logout bumps it). An invalid session
        is ended."""
        user_id = current_user_id(session)
        if user_id is None:
            return None
        user = self.store.get_user(user_id)
        if user is None or session_epoch(session) != (user.created, user.session_epoch):
            session.invalidate()  # deleted by the operator, or logged out: start over
            return None
        return user

    async def index(self, request: web.Request) -> web.Response:
        session = await get_session(request)
        user = self._signed_in(session)
        if user is None:
            return self._page("login.html")
        if user.blocked:
            session.invalidate()
            return self._page("blocked.html", status=403, blocked_name=user.name)
        return self._page("account.html", session=session, user=user, forget_url=False)

    async def login(self, request: web.Request) -> web.Response:
        if not await self.oauth.reachable():
            log.warning("portal_gitlab_unreachable", gitlab=self.config.gitlab_host)
            return failures.gitlab_down(self.config)
        session = await get_session(request)
        url, pending = self.oauth.begin(time.time())
        remember_pending(session, pending)
        return _redirect(url)

    async def callback(self, request: web.Request) -> web.Response:
        try:
            query = read_query(request)
        except BadInput as exc:
            return failures.bad_input(self.config, request, exc)
        session = await get_session(request)
        pending = take_pending(session, time.time())
        returned_state = query.get("state", "")
        if (
            pending is None
            or not hmac.compare_digest(pending.state.encode(), returned_state.encode())
            or not self.spent_states.spend(pending.state)
        ):
            log.info("portal_callback_rejected", reason="state")
            return failures.bad_state(self.config)
        if "error" in query:
            return failures.gitlab_refused(self.config, GitLabRefused(query.get("error", "")[:100]))
        try:
            gitlab_user = await self.oauth.complete(request.rel_url.raw_query_string, pending)
        except BadCallback:
            log.info("portal_callback_rejected", reason="callback")
            return failures.bad_state(self.config)
        except GitLabUnavailable as exc:
            log.warning("portal_gitlab_unavailable", error=str(exc))
            return failures.gitlab_down(self.config)
        except GitLabRefused as exc:
            return failures.gitlab_refused(self.config, exc)
        return await self._logged_in(request, gitlab_user)

    async def _logged_in(self, request: web.Request, gitlab_user: GitLabUser) -> web.Response:
        decision = self.config.access.decide(
            gitlab_user.id, gitlab_user.username, gitlab_user.groups
        )
        if not decision.allowed:
            # No record, no key: a stranger leaves nothing in users.yaml.
            log.warning(
                "portal_login_denied",
                user_id=f"gitlab:{gitlab_user.id}",
                username=gitlab_user.username,
                reason=decision.reason,
                groups=len(gitlab_user.groups),
            )
            (await get_session(request)).invalidate()
            return self._page("denied.html", status=403, denied_name=gitlab_user.username)
        try:
            user = await asyncio.to_thread(
                self.store.upsert_gitlab_user,
                gitlab_user.id,
                gitlab_user.username,
                gitlab_user.name,
            )
            if user.blocked:
                log.info("portal_login_blocked", user_id=user.user_id)
                (await get_session(request)).invalidate()
                return self._page("blocked.html", status=403, blocked_name=user.name)
            session = await start_user_session(
                request, user.user_id, created=user.created, epoch=user.session_epoch
            )
            remember_groups(session, gitlab_user.groups, self.config.admin_groups)
            log.info(
                "portal_login", user_id=user.user_id, has_key=user.has_key, access=decision.reason
            )
            if user.has_key:
                return self._redirect_home()
            key = await asyncio.to_thread(self.store.issue_key_for, user.user_id)
        except UserStoreError as exc:
            return failures.store_failed(self.config, exc)
        log.info("portal_key_issued", user_id=user.user_id, first=True)
        return self._key_page(
            self.store.get_user(user.user_id) or user, key, session, rotated=False
        )

    async def rotate(self, request: web.Request) -> web.Response:
        session = await get_session(request)
        user = self._signed_in(session)
        if user is None or not self._same_origin(request):
            # Answered before reading a byte of the body.
            return failures.closing(failures.forbidden(self.config))
        user_id = user.user_id
        try:
            form = await read_form(request)
        except BadInput as exc:
            return failures.bad_input(self.config, request, exc)
        if not csrf_matches(csrf_token(session), form.get(CSRF_FIELD)):
            log.info("portal_csrf_rejected", user_id=user_id)
            return failures.forbidden(self.config)
        # Again, after the (up to 10 s) read: a logout meanwhile must win over this rotation.
        user = self._signed_in(session)
        if user is None:
            return failures.forbidden(self.config)
        if user.blocked:
            session.invalidate()
            return self._page("blocked.html", status=403, blocked_name=user.name)
        try:
            key = await asyncio.to_thread(self.store.issue_key_for, user_id)
        except UserStoreError as exc:
            return failures.store_failed(self.config, exc)
        log.info("portal_key_issued", user_id=user_id, first=not user.has_key)
        fresh = self.store.get_user(user_id) or user
        return self._key_page(fresh, key, session, rotated=user.has_key)

    async def logout(self, request: web.Request) -> web.Response:
        session = await get_session(request)
        user = self._signed_in(session)
        if user is None:
            return failures.closing(self._redirect_home())  # before reading a byte of the body
        if not self._same_origin(request):
            return failures.closing(failures.forbidden(self.config))
        try:
            form = await read_form(request)
        except BadInput as exc:
            return failures.bad_input(self.config, request, exc)
        if not csrf_matches(csrf_token(session), form.get(CSRF_FIELD)):
            return failures.forbidden(self.config)
        try:
            # Server side: every cookie issued to this user so far stops working.
            await asyncio.to_thread(self.store.end_sessions, user.user_id)
        except UserStoreError as exc:
            return failures.store_failed(self.config, exc)
        log.info("portal_logout", user_id=user.user_id)
        session.invalidate()
        return self._redirect_home()

    # -- failures ------------------------------------------------------------------------------

    def _same_origin(self, request: web.Request) -> bool:
        """Browsers send Origin on POSTs; when they do, it must be the broker's own."""
        origin = request.headers.get("Origin")
        return origin is None or origin == self.config.public_origin


def _redirect(location: str) -> web.Response:
    """302 to GitLab, 303 (GET, even after a POST) to ``/``; never anywhere a request names."""
    response = web.Response(status=303 if location == "/" else 302)
    response.headers["Location"] = location
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
