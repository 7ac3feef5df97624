"""The one page a broker without GitLab login serves at ``/`` (and, as a 404, at ``/auth/*``).

It is plain text with a nonce substituted in, not a Jinja2 template: a broker that runs
without the portal should not pay for the portal's stack (Jinja2, authlib, cryptography,
aiohttp_session, ≈ 13 MB of resident memory) just to say the portal is off. The look follows
``templates/base.html`` by sharing its stylesheet, ``templates/portal.css`` (read as a plain
file, no Jinja2).
"""

from __future__ import annotations

import secrets
from importlib.resources import files

from aiohttp import web

from remotellm_broker.portal.headers import security_headers

__all__ = ["off_auth", "off_index", "off_page"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<meta name="robots" content="noindex">
<title>Portal not configured · remotellm</title>
<style nonce="@NONCE@">
@CSS@
</style>
</head>
<body>
<header class="top"><a class="brand" href="/">remote<span>llm</span></a></header>
<main>
<section class="card">
  <h1>Self-service keys are not set up here</h1>
  <p>This remotellm broker serves an OpenAI-compatible API, but its GitLab login portal is not
  configured, so keys cannot be fetched here. Ask the broker's operator for an API key.</p>
  <p class="muted">Operators: set <code>REMOTELLM_BROKER_GITLAB_CLIENT_ID</code>,
  <code>REMOTELLM_BROKER_GITLAB_CLIENT_SECRET</code>, <code>REMOTELLM_BROKER_SESSION_SECRET</code>
  and <code>REMOTELLM_BROKER_PUBLIC_URL</code> (see docs/portal.md).</p>
</section>
</main>
<footer>remotellm broker · an OpenAI-compatible API for your team's own GPUs</footer>
</body>
</html>
"""
_CSS = files("remotellm_broker.portal").joinpath("templates/portal.css").read_text("utf-8")
_PAGE = _PAGE.replace("@CSS@", _CSS.rstrip())


def off_page(*, status: int = 200) -> web.Response:
    """The page with a fresh nonce and the same security headers as every portal page."""
    nonce = secrets.token_urlsafe(18)
    response = web.Response(
        text=_PAGE.replace("@NONCE@", nonce),
        status=status,
        content_type="text/html",
        charset="utf-8",
    )
    response.headers.update(security_headers(nonce))
    return response


async def off_index(request: web.Request) -> web.Response:
    return off_page()


async def off_auth(request: web.Request) -> web.Response:
    return off_page(status=404)
