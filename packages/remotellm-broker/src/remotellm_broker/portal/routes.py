"""The portal's HTTP handlers: ``/``, ``/auth/login``, ``/auth/callback``, ``/auth/rotate``,
``/auth/logout``.

Flow: ``/auth/login`` puts a fresh ``state`` + PKCE verifier in the session and redirects to
GitLab; ``/auth/callback`` takes them out again (single use), refuses anything that does not
match before talking to GitLab, then swaps the code for a token, reads ``/api/v4/user``, records
the login in the user store and starts a new session. A first login gets a key, rendered into
that very response and nowhere else (not the session, not a URL, not a log). A returning user
lands on ``/``, which shows the key's prefix and a CSRF-protected "rotate" button.

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
from remotellm_broker.portal.csrf import CSRF_FIELD, csrf_matches
from remotellm_broker.portal.examples import (
    PLACEHOLDER_MODEL,
    ModelIds,
    example_model,
    listed_models,
)
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

    def _error(
        self, status: int, title: str, message: str, *, keys_still_work: bool
    ) -> web.Response:
        return self._page(
            "error.html",
            status=status,
            title=title,
            message=message,
            keys_still_work=keys_still_work,
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

    async def index(self, request: web.Request) -> web.Response:
        session = await get_session(request)
        user_id = current_user_id(session)
        user = self.store.get_user(user_id) if user_id else None
        if user is None:
            if user_id:
                session.invalidate()  # the operator deleted the user: start over
            return self._page("login.html")
        if user.blocked:
            session.invalidate()
            return self._page("blocked.html", status=403, blocked_name=user.name)
        return self._page("account.html", session=session, user=user, forget_url=False)

    async def login(self, request: web.Request) -> web.Response:
        if not await self.oauth.reachable():
            log.warning("portal_gitlab_unreachable", gitlab=self.config.gitlab_host)
            return self._gitlab_down()
        session = await get_session(request)
        url, pending = self.oauth.begin(time.time())
        remember_pending(session, pending)
        return _redirect(url)

    async def callback(self, request: web.Request) -> web.Response:
        session = await get_session(request)
        pending = take_pending(session, time.time())
        returned_state = request.query.get("state", "")
        if (
            pending is None
            or not hmac.compare_digest(pending.state.encode(), returned_state.encode())
            or not self.spent_states.spend(pending.state)
        ):
            log.info("portal_callback_rejected", reason="state")
            return self._bad_state()
        if "error" in request.query:
            return self._gitlab_refused(GitLabRefused(request.query.get("error", "")))
        try:
            gitlab_user = await self.oauth.complete(request.rel_url.raw_query_string, pending)
        except BadCallback:
            log.info("portal_callback_rejected", reason="callback")
            return self._bad_state()
        except GitLabUnavailable as exc:
            log.warning("portal_gitlab_unavailable", error=str(exc))
            return self._gitlab_down()
        except GitLabRefused as exc:
            return self._gitlab_refused(exc)
        return await self._logged_in(request, gitlab_user)

    async def _logged_in(self, request: web.Request, gitlab_user: GitLabUser) -> web.Response:
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
            session = await start_user_session(request, user.user_id)
            log.info("portal_login", user_id=user.user_id, has_key=user.has_key)
            if user.has_key:
                return self._redirect_home()
            key = await asyncio.to_thread(self.store.issue_key_for, user.user_id)
        except UserStoreError as exc:
            return self._store_failed(exc)
        log.info("portal_key_issued", user_id=user.user_id, first=True)
        return self._key_page(
            self.store.get_user(user.user_id) or user, key, session, rotated=False
        )

    async def rotate(self, request: web.Request) -> web.Response:
        session = await get_session(request)
        user_id = current_user_id(session)
        form = await request.post()
        if user_id is None or not self._same_origin(request):
            return self._forbidden()
        if not csrf_matches(csrf_token(session), form.get(CSRF_FIELD)):
            log.info("portal_csrf_rejected", user_id=user_id)
            return self._forbidden()
        user = self.store.get_user(user_id)
        if user is None:
            session.invalidate()
            return self._redirect_home()
        if user.blocked:
            session.invalidate()
            return self._page("blocked.html", status=403, blocked_name=user.name)
        try:
            key = await asyncio.to_thread(self.store.issue_key_for, user_id)
        except UserStoreError as exc:
            return self._store_failed(exc)
        log.info("portal_key_issued", user_id=user_id, first=not user.has_key)
        fresh = self.store.get_user(user_id) or user
        return self._key_page(fresh, key, session, rotated=user.has_key)

    async def logout(self, request: web.Request) -> web.Response:
        session = await get_session(request)
        form = await request.post()
        if current_user_id(session) is None:
            return self._redirect_home()
        if not self._same_origin(request) or not csrf_matches(
            csrf_token(session), form.get(CSRF_FIELD)
        ):
            return self._forbidden()
        log.info("portal_logout", user_id=current_user_id(session))
        session.invalidate()
        return self._redirect_home()

    # -- failures ------------------------------------------------------------------------------

    def _same_origin(self, request: web.Request) -> bool:
        """Browsers send Origin on POSTs; when they do, it must be the broker's own."""
        origin = request.headers.get("Origin")
        return origin is None or origin == self.config.public_origin

    def _forbidden(self) -> web.Response:
        return self._error(
            403,
            "This form has expired",
            "The page you submitted from is out of date or was not this site's. "
            "Open the portal again and retry.",
            keys_still_work=False,
        )

    def _bad_state(self) -> web.Response:
        return self._error(
            400,
            "This login link is not valid",
            "It has expired, was already used, or was started in another browser. "
            "Start the login again from this page.",
            keys_still_work=False,
        )

    def _gitlab_down(self) -> web.Response:
        return self._error(
            502,
            "GitLab is not answering",
            f"The broker could not reach GitLab at {self.config.gitlab_host}, so you cannot "
            "log in right now. Try again in a few minutes.",
            keys_still_work=True,
        )

    def _gitlab_refused(self, exc: GitLabRefused) -> web.Response:
        log.warning("portal_gitlab_refused", error=exc.error)
        if exc.error == "access_denied":
            message = "The login was cancelled in GitLab, so no key was issued."
            return self._error(403, "Login cancelled", message, keys_still_work=True)
        message = (
            f"GitLab refused the login ({exc.error}). Try again; if it keeps failing, "
            "tell the broker's operator."
        )
        return self._error(502, "GitLab refused the login", message, keys_still_work=True)

    def _store_failed(self, exc: UserStoreError) -> web.Response:
        log.error("portal_store_failed", error=str(exc))
        message = "The broker could not save your account just now. Try again in a minute."
        return self._error(503, "Something went wrong", message, keys_still_work=True)


def _redirect(location: str) -> web.Response:
    """302 to GitLab, 303 (GET, even after a POST) to ``/``; never anywhere a request names."""
    response = web.Response(status=303 if location == "/" else 302)
    response.headers["Location"] = location
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
