"""Test rig for the portal: the broker's real public app (``create_app``: API, relay, portal)
on 127.0.0.1, a fake GitLab next to it, and a cookie-keeping HTTP "browser" that walks the
OAuth redirects one hop at a time.

The public URL must be known before the app is built (it is the OAuth redirect URI), so the
rig binds its socket first and serves the app on it.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import Morsel
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from fake_gitlab import FakeGitLab
from remotellm_broker.app import create_app
from remotellm_broker.config import BrokerSettings
from remotellm_broker.users import UserStore

SESSION_SECRET = "portal-tests-session-secret-0123456789abcdef"
KEY_RE = re.compile(r'<code id="api-key">(sk-[0-9a-f]{32})</code>')
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')

AppFactory = Callable[[BrokerSettings, UserStore], web.Application]


def broker_app(settings: BrokerSettings, store: UserStore) -> web.Application:
    return create_app(settings, store, reload_interval_s=0.05)


@dataclass
class Page:
    """One response as the browser saw it."""

    status: int
    url: str
    text: str
    headers: Any  # CIMultiDictProxy[str]
    set_cookies: list[Morsel[str]]

    @property
    def location(self) -> str:
        return str(self.headers.get("Location", ""))

    def key(self) -> str | None:
        found = KEY_RE.search(self.text)
        return found.group(1) if found else None

    def csrf(self) -> str | None:
        found = CSRF_RE.search(self.text)
        return found.group(1) if found else None


class Browser:
    """An aiohttp client that keeps cookies (also for 127.0.0.1) and never follows redirects
    by itself, so each hop of the flow can be checked."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = aiohttp.CookieJar(unsafe=True)  # unsafe = allow cookies for IP hosts
        self.http = aiohttp.ClientSession(cookie_jar=self.jar)

    async def close(self) -> None:
        await self.http.close()

    def _url(self, path_or_url: str) -> str:
        absolute = path_or_url.startswith(("http://", "https://"))
        return path_or_url if absolute else self.base_url + path_or_url

    async def get(self, path_or_url: str, **kwargs: Any) -> Page:
        async with self.http.get(self._url(path_or_url), allow_redirects=False, **kwargs) as r:
            return await _page(r)

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> Page:
        async with self.http.post(self._url(path), data=data, allow_redirects=False, **kwargs) as r:
            return await _page(r)

    async def start_login(self) -> str:
        """``/auth/login`` → GitLab; returns the authorize URL the broker sent us to."""
        page = await self.get("/auth/login")
        assert page.status == 302, (page.status, page.text)
        return page.location

    async def authorize(self, authorize_url: str) -> str:
        """Let the fake GitLab approve; returns the callback URL it redirects back to."""
        page = await self.get(authorize_url)
        assert page.status == 302, (page.status, page.text)
        return page.location

    async def login(self) -> Page:
        """The whole flow; returns the callback's response."""
        callback = await self.authorize(await self.start_login())
        return await self.get(callback)

    def cookie_value(self, name: str) -> str | None:
        for cookie in self.jar:
            if cookie.key == name:
                return cookie.value
        return None


async def _page(response: aiohttp.ClientResponse) -> Page:
    return Page(
        status=response.status,
        url=str(response.url),
        text=await response.text(),
        headers=response.headers,
        set_cookies=list(response.cookies.values()),
    )


@dataclass
class PortalRig:
    fake: FakeGitLab
    store: UserStore
    settings: BrokerSettings
    url: str
    browsers: list[Browser]
    app: web.Application

    @property
    def relay_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/relay"

    def browser(self) -> Browser:
        browser = Browser(self.url)
        self.browsers.append(browser)
        return browser


@asynccontextmanager
async def running_portal(
    tmp_path: Path,
    *,
    app_factory: AppFactory = broker_app,
    public_host: str = "127.0.0.1",
    scheme: str = "http",
    **overrides: Any,
) -> AsyncIterator[PortalRig]:
    """Fake GitLab + broker app on loopback; everything is torn down on exit."""
    fake = FakeGitLab()
    await fake.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    public_url = f"{scheme}://{public_host}:{port}"
    fake.redirect_uris.append(f"{public_url}/auth/callback")
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "users_file": str(tmp_path / "users.yaml"),
        "public_url": public_url,
        "gitlab_url": fake.url,
        "gitlab_client_id": fake.client_id,
        "gitlab_client_secret": fake.client_secret,
        "session_secret": SESSION_SECRET,
    }
    if not any(k.startswith("portal_allow") for k in overrides):
        # The flow tests are about the login itself; access rules have their own tests.
        fields["portal_allow_any_gitlab_user"] = True
    fields.update(overrides)
    settings = BrokerSettings(**fields)
    store = UserStore(tmp_path / "users.yaml")
    app = app_factory(settings, store)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    rig = PortalRig(fake, store, settings, f"http://127.0.0.1:{port}", [], app)
    try:
        await web.SockSite(runner, sock).start()
        yield rig
    finally:
        for browser in rig.browsers:
            await browser.close()
        await runner.cleanup()
        sock.close()
        await fake.stop()
