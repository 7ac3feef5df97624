"""The portal's failure pages: what a person sees when a login or a form cannot go through.

Each says what happened and what to do next, and whether keys already issued keep working;
none carries a traceback. ``closing`` marks a response that ends the connection, for answers
given without reading (all of) the request's body.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from remotellm_broker.portal.forms import BadInput
from remotellm_broker.portal.oauth import GitLabRefused
from remotellm_broker.portal.pages import render
from remotellm_broker.portal.settings import PortalConfig
from remotellm_broker.users import UserStoreError

__all__ = [
    "bad_input",
    "bad_state",
    "closing",
    "error_page",
    "forbidden",
    "gitlab_down",
    "gitlab_refused",
    "store_failed",
]

log = structlog.get_logger(__name__)


def error_page(
    config: PortalConfig, status: int, title: str, message: str, *, keys_still_work: bool
) -> web.Response:
    return render(
        "error.html",
        status=status,
        user=None,
        csrf=None,
        api_url=config.api_url,
        gitlab_host=config.gitlab_host,
        title=title,
        message=message,
        keys_still_work=keys_still_work,
    )


def forbidden(config: PortalConfig) -> web.Response:
    return error_page(
        config,
        403,
        "This form has expired",
        "The page you submitted from is out of date or was not this site's. "
        "Open the portal again and retry.",
        keys_still_work=False,
    )


def bad_input(config: PortalConfig, request: web.Request, exc: BadInput) -> web.Response:
    log.warning("portal_bad_request", path=request.path, status=exc.status, reason=exc.reason)
    titles = {
        408: "The form took too long to arrive",
        413: "The form is too large",
    }
    message = (
        "The broker could not read what your browser sent. "
        "Open the portal again from its address and retry."
    )
    title = titles.get(exc.status, "Bad request")
    page = error_page(config, exc.status, title, message, keys_still_work=True)
    return closing(page)


def bad_state(config: PortalConfig) -> web.Response:
    return error_page(
        config,
        400,
        "This login link is not valid",
        "It has expired, was already used, or was started in another browser. "
        "Start the login again from this page.",
        keys_still_work=False,
    )


def gitlab_down(config: PortalConfig) -> web.Response:
    return error_page(
        config,
        502,
        "GitLab is not answering",
        f"The broker could not reach GitLab at {config.gitlab_host}, so you cannot "
        "log in right now. Try again in a few minutes.",
        keys_still_work=True,
    )


def gitlab_refused(config: PortalConfig, exc: GitLabRefused) -> web.Response:
    log.warning("portal_gitlab_refused", error=exc.error)
    if exc.error == "access_denied":
        message = "The login was cancelled in GitLab, so no key was issued."
        return error_page(config, 403, "Login cancelled", message, keys_still_work=True)
    message = (
        f"GitLab refused the login ({exc.error}). Try again; if it keeps failing, "
        "tell the broker's operator."
    )
    return error_page(config, 502, "GitLab refused the login", message, keys_still_work=True)


def store_failed(config: PortalConfig, exc: UserStoreError) -> web.Response:
    log.error("portal_store_failed", error=str(exc))
    message = "The broker could not save your account just now. Try again in a minute."
    return error_page(config, 503, "Something went wrong", message, keys_still_work=True)


def closing(response: web.Response) -> web.Response:
    """Close the connection after this answer: whatever body the client still meant to send
    is not read, neither now nor by aiohttp's keep-alive lingering."""
    response.force_close()
    return response
