"""GitLab login with OpenID Connect (authorization code + PKCE S256) on top of authlib, over
aiohttp.

authlib does the protocol work: it generates the ``state`` and the PKCE verifier, derives the
S256 challenge, builds the authorize URL and the token request, authenticates the client,
checks the returned ``state`` and parses GitLab's token response and its errors. The scope is
``openid`` alone: it lets the broker read GitLab's OpenID Connect userinfo (``/oauth/userinfo``:
``sub`` = the user id, ``nickname``/``preferred_username`` = the username, ``groups`` = the full
path of every group the user is in, directly or through an ancestor) and nothing else of the
account. This module only gives authlib an aiohttp transport (the broker already runs on
aiohttp, so the portal does not pull in a second HTTP stack) and turns everything GitLab can do
wrong into two exceptions:

    GitLabError
    ├── GitLabUnavailable   GitLab did not answer usefully (refused, timed out, 5xx, garbage)
    └── GitLabRefused       GitLab answered and said no (access_denied, invalid_grant, 401 …)

A bad or replayed callback is not GitLab's fault; :class:`BadCallback` covers it and is raised
before any request leaves the broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.client import OAuth2Client  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    MismatchingStateException,
    MissingCodeException,
    OAuth2Error,
)
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    parse_authorization_code_response,
)
from authlib.oidc.core import UserInfo  # type: ignore[import-untyped]

__all__ = [
    "BadCallback",
    "GitLabError",
    "GitLabOAuth",
    "GitLabRefused",
    "GitLabUnavailable",
    "GitLabUser",
    "PendingLogin",
    "parse_userinfo",
]

SCOPE = "openid"
#: More groups than this in one userinfo answer is not a team member, it is an attack.
MAX_GROUPS = 10_000
PROBE_TIMEOUT_S = 3.0


class GitLabError(Exception):
    """GitLab could not be used to log in."""


class GitLabUnavailable(GitLabError):
    """GitLab is down, unreachable or answered with something that is not an answer."""


class GitLabRefused(GitLabError):
    """GitLab answered and refused (the user cancelled, the code or client was rejected…)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class BadCallback(Exception):
    """The callback does not belong to a login this browser started (or it was used already)."""


@dataclass(frozen=True)
class PendingLogin:
    """What the browser's session keeps between ``/auth/login`` and ``/auth/callback``."""

    state: str
    code_verifier: str
    started_at: float


@dataclass(frozen=True)
class GitLabUser:
    """The GitLab account that logged in: the id is the identity, the username and name are
    for display (and username rules), ``groups`` the full paths of its groups."""

    id: int
    username: str
    name: str
    groups: tuple[str, ...] = ()


class _TokenResponse:
    """The slice of a ``requests``-style response that authlib's token parser reads."""

    def __init__(self, status: int, text: str) -> None:
        self.status_code = status
        self.text = text

    def json(self) -> Any:
        return json.loads(self.text)

    def raise_for_status(self) -> None:
        if self.status_code >= 500:
            raise GitLabUnavailable(f"GitLab token endpoint answered HTTP {self.status_code}")
        if self.status_code >= 400:
            raise GitLabRefused("http_error", f"token endpoint answered HTTP {self.status_code}")


class _AiohttpOAuth2Client(OAuth2Client):  # type: ignore[misc]
    """authlib's OAuth 2 client with the token request sent by aiohttp (as authlib's own
    httpx client does: only the transport differs)."""

    async def _fetch_token(
        self,
        url: str,
        body: str = "",
        headers: dict[str, str] | None = None,
        auth: Any = None,
        method: str = "POST",
        **kwargs: Any,
    ) -> Any:
        url, signed_headers, body = auth.prepare(method, url, dict(headers or {}), body)
        http: aiohttp.ClientSession = self.session
        async with http.post(url, data=body.encode(), headers=signed_headers) as response:
            text = await response.text(errors="replace")
            status = response.status
        return self.parse_response_token(_TokenResponse(status, text))


class GitLabOAuth:
    """Logs a browser in with one GitLab instance (gitlab.com or self-hosted)."""

    def __init__(
        self,
        *,
        gitlab_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        http: aiohttp.ClientSession,
    ) -> None:
        base = gitlab_url.rstrip("/")  # GitLab may live under a path: https://host/gitlab
        self.authorize_endpoint = f"{base}/oauth/authorize"
        self.token_endpoint = f"{base}/oauth/token"
        self.userinfo_endpoint = f"{base}/oauth/userinfo"
        self.redirect_uri = redirect_uri
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = http

    def _client(self) -> Any:
        return _AiohttpOAuth2Client(
            self._http,
            client_id=self._client_id,
            client_secret=self._client_secret,
            # GitLab documents the form-field style; it accepts HTTP Basic too.
            token_endpoint_auth_method="client_secret_post",
            scope=SCOPE,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
        )

    async def reachable(self) -> bool:
        """Whether GitLab answers at all, so a dead GitLab gets our error page, not a browser
        error. Any answer below 500 counts (the bare authorize URL is a 4xx page)."""
        try:
            async with self._http.head(
                self.authorize_endpoint,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
            ) as response:
                return response.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False

    def begin(self, now: float) -> tuple[str, PendingLogin]:
        """The GitLab authorize URL to send the browser to, and what to remember meanwhile."""
        verifier = generate_token(64)
        url, state = self._client().create_authorization_url(
            self.authorize_endpoint, code_verifier=verifier
        )
        return str(url), PendingLogin(state=str(state), code_verifier=verifier, started_at=now)

    async def complete(self, query_string: str, pending: PendingLogin) -> GitLabUser:
        """Check the callback against ``pending``, swap the code for a token, read the user.

        Raises :class:`BadCallback` (before any request to GitLab) when the callback's
        ``state`` is not the one this login was started with.
        """
        callback_url = f"{self.redirect_uri}?{query_string}"
        client = self._client()
        try:
            params = parse_authorization_code_response(callback_url, state=pending.state)
        except MismatchingStateException as exc:
            raise BadCallback("state does not match this browser's login") from exc
        except MissingCodeException as exc:
            raise BadCallback("callback without an authorization code") from exc
        try:
            token = await client.fetch_token(
                self.token_endpoint,
                grant_type="authorization_code",
                code=params["code"],
                code_verifier=pending.code_verifier,
            )
            if not isinstance(token, dict) or not token.get("access_token"):
                raise GitLabRefused("invalid_token_response", "no access_token in the answer")
            return await self._fetch_user(client)
        except OAuth2Error as exc:
            raise GitLabRefused(str(exc.error), str(exc.description or "")) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GitLabUnavailable(f"GitLab is unreachable: {type(exc).__name__}") from exc
        except ValueError as exc:  # not JSON, or an error text authlib will not carry
            raise GitLabUnavailable("GitLab answered with something unexpected") from exc

    async def _fetch_user(self, client: Any) -> GitLabUser:
        url, headers, _ = client.token_auth.prepare(
            self.userinfo_endpoint, {"Accept": "application/json"}, ""
        )
        async with self._http.get(url, headers=headers) as response:
            if response.status >= 500:
                raise GitLabUnavailable(f"GitLab userinfo answered HTTP {response.status}")
            if response.status >= 400:
                raise GitLabRefused("userinfo", f"GitLab userinfo answered HTTP {response.status}")
            data = await response.json(content_type=None)
        if not isinstance(data, dict):
            raise GitLabUnavailable("GitLab userinfo answered with something unexpected")
        return parse_userinfo(UserInfo(data))


def parse_userinfo(claims: UserInfo) -> GitLabUser:
    """GitLab's OIDC userinfo claims → the account; ``GitLabRefused`` if they do not name one.

    ``sub`` is GitLab's numeric user id as a string; the username is ``nickname`` (GitLab
    also sends it as ``preferred_username``); ``groups`` lists full group paths.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit() or len(sub) > 19:
        raise GitLabRefused("userinfo", "the user has no numeric id (sub)")
    user_id = int(sub)
    if user_id <= 0:
        raise GitLabRefused("userinfo", "the user has no numeric id (sub)")
    username = claims.get("nickname") or claims.get("preferred_username")
    if not isinstance(username, str) or not username:
        raise GitLabRefused("userinfo", "the user has no username (nickname)")
    name = claims.get("name")
    raw_groups = claims.get("groups", [])
    if not isinstance(raw_groups, list) or len(raw_groups) > MAX_GROUPS:
        raise GitLabRefused("userinfo", "the groups claim is not a list of group paths")
    groups = tuple(g for g in raw_groups if isinstance(g, str) and g)
    return GitLabUser(
        id=user_id, username=username, name=name if isinstance(name, str) else "", groups=groups
    )
