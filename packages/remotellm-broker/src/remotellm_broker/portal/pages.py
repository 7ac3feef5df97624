"""Rendering the portal's pages: Jinja2 with autoescape, plus the headers every page carries
(``headers.py``: inline CSS and script only with this response's nonce, ``no-store``).

Only the configured portal imports this module: a broker without GitLab login serves its one
page from ``offpage.py`` and never loads Jinja2.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined

from remotellm_broker.portal.headers import security_headers

__all__ = ["render", "render_svg", "security_headers"]

_env = Environment(
    loader=PackageLoader("remotellm_broker.portal", "templates"),
    autoescape=True,  # every template is HTML; a GitLab name is data, never markup
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(timestamp: str | None) -> str:
    """users.yaml's ISO-8601 UTC times, the way a person reads them."""
    if not timestamp:
        return ""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


_env.filters["when"] = _when


def render(template: str, *, status: int = 200, **context: Any) -> web.Response:
    nonce = secrets.token_urlsafe(18)
    text = _env.get_template(template).render(nonce=nonce, **context)
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(security_headers(nonce))
    return response


def render_svg(template: str, **context: Any) -> str:
    """An SVG image (autoescaped like the pages; no nonce: an image runs no script)."""
    return _env.get_template(template).render(**context)
