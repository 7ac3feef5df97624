"""The GitLab login portal (placeholder until the portal lands)."""

from typing import Any

from aiohttp import web

__all__ = ["add_portal"]


def add_portal(app: web.Application, settings: Any, store: Any) -> None:
    """Add the portal's routes (``/``, ``/auth/...``) to the broker's public app."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="remotellm broker: the login portal is not configured.\n")

    app.router.add_get("/", index)
