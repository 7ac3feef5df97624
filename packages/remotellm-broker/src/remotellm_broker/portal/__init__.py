"""The GitLab login portal: teammates log in with GitLab and get their own API key.

``add_portal`` mounts ``/`` and ``/auth/*`` on the broker's public app. With GitLab configured
it serves the login page, the OAuth flow (authorization code + PKCE S256, see ``oauth.py``),
the key page and the account page; without, it serves one page saying self-service keys are
off here (``offpage.py``). Sessions live in encrypted cookies (``sessions.py``) scoped to these
routes only, so the OpenAI API next to them is untouched.

The portal's stack (Jinja2, authlib, cryptography, aiohttp_session: ≈ 13 MB resident) is
imported only when the portal is on; this module and the "off" path import none of it, so a
broker without GitLab login stays small (tests/test_portal_imports.py holds it to that).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from remotellm_broker.config import BrokerSettings, ConfigError
from remotellm_broker.portal.examples import ModelIds
from remotellm_broker.portal.offpage import off_auth, off_index
from remotellm_broker.portal.settings import missing_portal_settings, portal_config
from remotellm_broker.users import UserStore

if TYPE_CHECKING:
    from remotellm_broker.portal.routes import Portal

__all__ = ["PORTAL", "ModelIds", "add_portal"]

log = structlog.get_logger(__name__)

PORTAL: web.AppKey[Portal] = web.AppKey("remotellm_portal")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _add_usage_pages(
    app: web.Application,
    settings: BrokerSettings,
    store: UserStore,
    public_origin: str,
    with_session: Callable[[Handler], Handler],
) -> None:
    """The account usage page and the admin page (issue 17), in modules of their own."""
    from remotellm_broker.portal.admin import AdminPages
    from remotellm_broker.portal.myusage import UsagePages

    mine = UsagePages(settings, store)
    admin = AdminPages(settings, store, public_origin)
    app.router.add_get("/account/usage", with_session(mine.account_usage))
    app.router.add_get("/account/usage.svg", with_session(mine.account_chart))
    app.router.add_get("/admin", with_session(admin.page))
    app.router.add_post("/admin/users/block", with_session(admin.block))
    app.router.add_post("/admin/users/unblock", with_session(admin.unblock))
    app.router.add_post("/admin/users/limits", with_session(admin.limits))
    app.router.add_post("/admin/streams/cut", with_session(admin.cut))


def add_portal(
    app: web.Application,
    settings: BrokerSettings,
    store: UserStore,
    *,
    model_ids: ModelIds | None = None,
) -> None:
    """Add the portal's routes (``/``, ``/auth/...``) to the broker's public app.

    ``model_ids``, when given, lists the models connectors serve right now; the key page
    then uses a real model id in its examples instead of a placeholder.
    """
    config = portal_config(settings)
    if config is None:
        wanted = (
            settings.gitlab_client_id or settings.gitlab_client_secret or settings.session_secret
        )
        if wanted:
            log.warning("portal_off", missing=missing_portal_settings(settings))
        else:
            log.info("portal_off", reason="GitLab login not configured")
        app.router.add_get("/", off_index)
        app.router.add_route("*", "/auth/{tail:.*}", off_auth)
        return
    if config.access.empty:
        # load_settings refuses this already; an app built from settings by hand must too.
        raise ConfigError(
            "the GitLab login portal has no access rule: set portal_allowed_groups or "
            "portal_allowed_users, or portal_allow_any_gitlab_user to open it to everyone"
        )
    # Only now: these pull in Jinja2, authlib, cryptography and aiohttp_session.
    from remotellm_broker.portal.routes import Portal
    from remotellm_broker.portal.sessions import make_storage, sessions_for

    portal = Portal(config, store, model_ids)
    app[PORTAL] = portal
    app.cleanup_ctx.append(portal.gitlab_client)
    with_session = sessions_for(make_storage(config.session_secret, secure=config.secure_cookies))
    _add_usage_pages(app, settings, store, config.public_origin, with_session)
    app.router.add_get("/", with_session(portal.index))
    app.router.add_get("/auth/login", with_session(portal.login))
    app.router.add_get("/auth/callback", with_session(portal.callback))
    app.router.add_post("/auth/rotate", with_session(portal.rotate))
    app.router.add_post("/auth/logout", with_session(portal.logout))
    access = config.access
    log.info(
        "portal_on",
        gitlab=config.gitlab_host,
        callback=config.redirect_uri,
        open_to_any_gitlab_user=access.allow_any,
        allowed_groups=len(access.groups),
        allowed_users=len(access.user_ids) + len(access.usernames),
    )
